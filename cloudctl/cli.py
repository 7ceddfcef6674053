"""The ``cloudctl`` command line: thin verbs over the layers below."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from . import __version__
from .errors import CloudctlError, InputError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_CODES = """\b
Exit codes:
  0 success            1 internal error (a bug)   2 invalid input (inventory, flags)
  3 secrets missing    4 render contract broken   5 environment not ready
  6 remote failure     7 timed out                8 platform component failed
  9 cluster state unreadable or stale (names the file)     130 interrupted (Ctrl-C)
  10 a safety gate refused: upgrade (PDB, etcd, storage, rollback), install-ssh
     (disk in use or too small, unknown or changed SSH host key); nothing written
  11 an Ansible playbook failed (hook, lab prepare-host): task and host named
"""


def _emit_error(exc: CloudctlError, as_json: bool) -> None:
    if as_json:
        payload: dict[str, Any] = {"error": type(exc).__name__, "message": exc.message}
        if isinstance(exc, InputError):
            payload["problems"] = [
                {"path": p.path, "line": p.line, "message": p.message} for p in exc.problems
            ]
        click.echo(json.dumps(payload), err=True)
    else:
        click.echo(f"error: {exc}", err=True)


def handle_errors(fn: F) -> F:
    """Translate CloudctlError into its message on stderr and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = kwargs.get("output_format") == "json"
        try:
            return fn(*args, **kwargs)
        except CloudctlError as exc:
            _emit_error(exc, as_json)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


inventory_option = click.option(
    "-i",
    "--inventory",
    "inventory_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default="inventory.yaml",
    show_default=True,
    help="Inventory file.",
)
secrets_option = click.option(
    "--secrets",
    "secrets_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Secrets directory [default: <inventory dir>/secrets/<cluster>/].",
)
cluster_dir_option = click.option(
    "--cluster-dir",
    "cluster_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="State directory [default: <inventory dir>/clusters/<cluster>/].",
)
format_option = click.option(
    "-o",
    "--output",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Output format.",
)


@click.group(epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cloudctl")
def main() -> None:
    """Bare-metal racks to a Talos + Flux private cloud from one inventory file."""


# --------------------------------------------------------------------------- validate


R = TypeVar("R")


def run_async(awaitable: Coroutine[Any, Any, R]) -> R:
    """``asyncio.run``, with asyncio imported only by the verbs that run something (the verb
    modules are all imported at start-up to register their commands)."""
    import asyncio

    return asyncio.run(awaitable)


def _load(path: Path) -> Any:
    from .inventory import load_inventory

    loaded = load_inventory(path)
    for w in loaded.warnings:
        click.echo(f"warning: {w}", err=True)
    return loaded


@main.command(epilog=EXIT_CODES)
@inventory_option
@format_option
@handle_errors
def validate(inventory_path: Path, output_format: str) -> None:
    """Check an inventory: structure, types, and every semantic rule."""
    loaded = _load(inventory_path)
    inv = loaded.inventory
    if output_format == "json":
        click.echo(
            json.dumps(
                {
                    "valid": True,
                    "cluster": inv.cluster.name,
                    "nodes": len(inv.nodes),
                    "controlplanes": len(inv.controlplanes),
                    "warnings": [
                        {"path": w.path, "line": w.line, "message": w.message}
                        for w in loaded.warnings
                    ],
                }
            )
        )
    else:
        click.echo(
            f"{inventory_path}: valid — cluster {inv.cluster.name}, Talos "
            f"{inv.cluster.talos_version}, Kubernetes {inv.cluster.kubernetes_version}, "
            f"{len(inv.controlplanes)} control plane(s), {len(inv.workers)} worker(s)"
        )


# --------------------------------------------------------------------------- secrets


def cluster_paths(
    inventory_path: Path, cluster: str, cluster_dir: Path | None = None,
    secrets_dir: Path | None = None,
) -> tuple[Path, Path]:
    """(cluster directory, secrets directory): the options if given, else the defaults
    ``<inventory dir>/clusters/<cluster>/`` and ``<inventory dir>/secrets/<cluster>/``."""
    from .pipeline.context import default_cluster_dir
    from .secrets import default_secrets_dir

    return (cluster_dir or default_cluster_dir(inventory_path, cluster),
            secrets_dir or default_secrets_dir(inventory_path, cluster))


def _store(
    inventory_path: Path, cluster: str, secrets_dir: Path | None, identity: Path | None = None
) -> Any:
    from .secrets import SecretsStore

    store = SecretsStore(cluster_paths(inventory_path, cluster, secrets_dir=secrets_dir)[1])
    return store if identity is None else SecretsStore(store.directory, identity)


@main.group()
def secrets() -> None:
    """Cluster PKI and tokens (generated once per cluster, stored 0600; age-encrypted copies
    for Git). Every command reads an encrypted-only bundle with the identity file named by
    $CLOUDCTL_AGE_IDENTITY."""


identity_option = click.option(
    "--identity",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="age identity file (AGE-SECRET-KEY-1...) [default: $CLOUDCTL_AGE_IDENTITY].",
)


@secrets.command("encrypt", epilog=EXIT_CODES)
@inventory_option
@secrets_option
@identity_option
@click.option("--remove-plain", is_flag=True,
              help="Delete the plain files once the encrypted ones are written.")
@handle_errors
def secrets_encrypt(
    inventory_path: Path, secrets_dir: Path | None, identity: Path | None, remove_plain: bool
) -> None:
    """Encrypt the bundle with age to the inventory's secrets.recipients.

    Writes secrets.yaml.age and admin.yaml.age (0600) beside the plain files: those may go into
    Git, the plain ones never. Re-running re-encrypts (e.g. after a recipient was added); an
    encrypted-only bundle is read with --identity.
    """
    from .errors import SecretsError

    inv = _load(inventory_path).inventory
    if not inv.secrets.recipients:
        raise SecretsError("the inventory has no secrets.recipients (age public keys) to "
                           "encrypt to")
    store = _store(inventory_path, inv.cluster.name, secrets_dir, identity)
    written = store.encrypt(list(inv.secrets.recipients), remove_plain=remove_plain)
    click.echo(f"encrypted to {len(inv.secrets.recipients)} recipient(s): "
               + ", ".join(str(p) for p in written)
               + ("; plain files removed" if remove_plain else ""))


@secrets.command("decrypt", epilog=EXIT_CODES)
@inventory_option
@secrets_option
@identity_option
@handle_errors
def secrets_decrypt(inventory_path: Path, secrets_dir: Path | None, identity: Path | None) -> None:
    """Write the plain bundle (0600) from secrets.yaml.age / admin.yaml.age with an identity.

    Everything is decrypted and checked before any file is written."""
    inv = _load(inventory_path).inventory
    store = _store(inventory_path, inv.cluster.name, secrets_dir, identity)
    written = store.decrypt()
    click.echo("decrypted: " + ", ".join(str(p) for p in written))


@secrets.command("init", epilog=EXIT_CODES)
@inventory_option
@secrets_option
@click.option(
    "--force", is_flag=True, help="Replace an existing bundle (new PKI: breaks a live cluster)."
)
@handle_errors
def secrets_init(inventory_path: Path, secrets_dir: Path | None, force: bool) -> None:
    """Generate the Talos-compatible secrets bundle unless it exists.

    Key types as Talos makes them: OS CA Ed25519, etcd/Kubernetes/aggregator CAs ECDSA P-256,
    service-account RSA-4096, talosconfig client cert with O=os:admin. Files are written 0600
    in plain text (`cloudctl secrets encrypt` makes the age-encrypted copies for Git); nothing
    secret is printed.
    """
    inv = _load(inventory_path).inventory
    store = _store(inventory_path, inv.cluster.name, secrets_dir)
    _, created = store.init(force=force)
    if created:
        click.echo(f"secrets bundle written to {store.directory} (0600)")
    else:
        click.echo(f"secrets bundle already exists at {store.directory}; reusing it")


# --------------------------------------------------------------------------- render


@main.command(epilog=EXIT_CODES)
@inventory_option
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Output directory (replaced atomically as a whole); required unless --commit.",
)
@secrets_option
@identity_option
@cluster_dir_option
@click.option(
    "--plan", is_flag=True,
    help="List what would be added/changed/removed; write nothing. With --commit: what the "
         "commit would change; commit nothing.",
)
@click.option(
    "--require-secrets",
    is_flag=True,
    help="Fail (exit 3) instead of generating the secrets bundle when it does not exist yet.",
)
@click.option(
    "--commit", is_flag=True,
    help="Commit the GitOps tree at gitops.path on gitops.branch (plus the cluster record "
         "and the age-encrypted secrets bundle) in the local clone <cluster dir>/gitops.git; "
         "no commit when nothing changed. Refused while the bundle exists in plain form.",
)
@click.option(
    "--push", is_flag=True,
    help="Push the branch to gitops.repo (implies --commit; also sends earlier unpushed "
         "commits). A failed push leaves the remote unchanged.",
)
@handle_errors
def render(
    inventory_path: Path,
    out_dir: Path | None,
    secrets_dir: Path | None,
    identity: Path | None,
    cluster_dir: Path | None,
    plan: bool,
    require_secrets: bool,
    commit: bool,
    push: bool,
) -> None:
    """Render Talos image definitions, machine configs and the GitOps tree.

    Renders into a temporary directory and swaps it in, so a failed render leaves OUT as it
    was. Machine configs and the talosconfig are written 0600. The first render of a cluster
    generates its secrets bundle (as `cloudctl secrets init` does; said on stderr); later
    renders reuse it. --plan writes nothing, secrets included.

    \b
    --commit / --push (GitOps repository, through dulwich; no git CLI):
      the repository gets <gitops.path>/ (the rendered gitops/ tree, which Flux builds),
      .cloudctl/<cluster>/cluster.yaml (versions and nodes; no secrets) and
      secrets/<cluster>/*.yaml.age (the encrypted bundle as `secrets encrypt` wrote it).
      Commits are made in a local bare clone, <cluster dir>/gitops.git, on top of the
      remote branch just fetched; --push then updates the remote branch only if it did not
      move meanwhile. The message lists chart versions per HelmRelease, releases whose
      values changed, nodes added/removed, Talos/Kubernetes versions, and the files.
      Refused (exit 3) while the bundle exists in plain form or without secrets.recipients:
      run `cloudctl secrets encrypt --remove-plain` and read the bundle with --identity or
      $CLOUDCTL_AGE_IDENTITY. Credentials are whatever gitops.repo carries (ssh: your agent);
      they are never printed.
    """
    from .errors import Problem
    from .render import render_all
    from .render.output import plan_tree, write_tree
    from .secrets import SecretsStore, default_secrets_dir

    commit = commit or push
    if out_dir is None and not commit:
        raise InputError(Problem("--out", "required (or use --commit)"))
    inv = _load(inventory_path).inventory
    # not _store(): cluster_paths() imports the pipeline (asyncio, gRPC) for the cluster dir
    directory = secrets_dir or default_secrets_dir(inventory_path, inv.cluster.name)
    store = SecretsStore(directory) if identity is None else SecretsStore(directory, identity)
    bundle: Any
    if commit:
        sealed = _commit_secrets(inventory_path, inv, store)
        bundle = store.load  # loaded while the GitOps tree renders (see render_all)
    elif store.exists() or require_secrets:
        bundle = store.load
    elif plan:
        from .secrets import generate_bundle

        click.echo(f"secrets bundle would be generated at {store.directory}", err=True)
        bundle = generate_bundle()  # in memory only: the plan needs the file set, not the keys
    else:
        bundle, _ = store.init()
        click.echo(f"secrets bundle generated at {store.directory} (0600)", err=True)
    files = render_all(inv, bundle)
    if out_dir is not None:
        if plan:
            for line in plan_tree(files, out_dir).lines():
                click.echo(line)
        else:
            result = write_tree(files, out_dir, inv.cluster.name)  # reads the old tree once
            click.echo(
                f"rendered {len(files)} files to {out_dir} "
                f"({sum(1 for c in result.changes if c.kind != 'removed')} written or changed, "
                f"{sum(1 for c in result.changes if c.kind == 'removed')} removed)"
            )
    if commit:
        _commit_render(inventory_path, inv, files, sealed, cluster_dir, push=push, plan=plan)


def _commit_secrets(inventory_path: Path, inv: Any, store: Any) -> dict[str, bytes]:
    """The encrypted bundle files to commit; SecretsError when plain secrets exist or nothing
    says whom the bundle is encrypted to."""
    from .errors import Problem, SecretsError

    fix = f"cloudctl secrets encrypt -i {inventory_path} --remove-plain"
    if inv.gitops is None:
        raise InputError(Problem("gitops", "--commit needs a gitops section (repo, branch, "
                                 "path) saying where to commit"))
    if not inv.secrets.recipients:
        raise SecretsError("refusing to commit: the inventory has no secrets.recipients, so the "
                           "secrets bundle cannot go into Git encrypted; add an age public key "
                           f"there, then run `{fix}`")
    for plain in (store.secrets_path, store.admin_path):
        if plain.exists():
            raise SecretsError(f"refusing to commit: the secrets bundle exists in plain form "
                               f"({plain}); plain secrets never go into Git. Run `{fix}` "
                               "(keep the identity file: it decrypts the bundle)")
    if not store.encrypted_exists():
        raise SecretsError(f"refusing to commit: no encrypted secrets bundle at "
                           f"{store.encrypted(store.secrets_path)}; run `cloudctl secrets init "
                           f"-i {inventory_path}`, then `{fix}`")
    sealed = {}
    for path in (store.secrets_path, store.admin_path):
        enc = store.encrypted(path)
        if enc.is_file():
            sealed[enc.name] = enc.read_bytes()
    return sealed


def _commit_render(
    inventory_path: Path, inv: Any, files: Any, sealed: dict[str, bytes],
    cluster_dir: Path | None, *, push: bool, plan: bool,
) -> None:
    from .gitops import commit_tree, redact_url

    cache = cluster_paths(inventory_path, inv.cluster.name, cluster_dir)[0] / "gitops.git"
    where = f"{redact_url(inv.gitops.repo)} branch {inv.gitops.branch}"
    res = commit_tree(inv, files, push=push and not plan, cache=cache, secrets=sealed,
                      dry_run=plan)
    for note in res.notes:
        click.echo(f"note: {note}", err=True)
    if plan:
        if res.message is None:
            click.echo(f"nothing to commit: {where} already holds this render")
        else:
            click.echo(f"would commit to {where}:")
            click.echo(res.message.rstrip())
        return
    if res.commit_id is None and (res.pushed or res.unpushed):
        click.echo(f"nothing new to commit: the local clone {cache} already holds this render")
    elif res.commit_id is None:
        click.echo(f"nothing to commit: {where} already holds this render"
                   + (f" (head {res.head[:12]})" if res.head else ""))
    else:
        click.echo(f"committed {res.commit_id[:12]} to {where} (local clone {cache}):")
        click.echo((res.message or "").rstrip())
    if res.pushed:
        click.echo(f"pushed {res.head[:12] if res.head else ''} to {where}")
    elif res.unpushed:
        click.echo(f"not pushed: {where} is behind the local clone; push with "
                   f"`cloudctl render -i {inventory_path} --push`")


def _register() -> None:
    """Attach the verb groups that live in cloudctl/commands/ (imported lazily by click)."""
    import importlib
    import pkgutil

    from . import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        for cmd in getattr(module, "COMMANDS", ()):
            main.add_command(cmd)


_register()

if __name__ == "__main__":  # pragma: no cover
    main()
