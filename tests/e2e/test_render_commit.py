"""`cloudctl render --commit [--push]` end to end: the CLI renders, commits with dulwich into
its local clone and pushes to a real bare repository made in tmp_path, served over loopback
HTTP by dulwich's own smart-HTTP server (Flux's GitRepository accepts only http(s)/ssh URLs,
so the inventory names an http:// URL). Real age keys (pyrage X25519)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from wsgiref.simple_server import make_server

import pytest
from dulwich import porcelain
from dulwich.object_store import iter_tree_contents
from dulwich.objects import Commit
from dulwich.repo import Repo
from dulwich.server import DictBackend
from dulwich.web import WSGIRequestHandlerLogger, WSGIServerLogger, make_wsgi_chain
from pyrage import x25519

from cloudctl.secrets import SecretsStore
from cloudctl.secrets.age import ENV_IDENTITY

ROOT = Path(__file__).resolve().parents[2]
GOLDEN_SECRETS = ROOT / "tests/golden/secrets/rack1"
CLI = [sys.executable, "-c", "from cloudctl.cli import main; main()"]
AGE_MAGIC = b"age-encryption.org/v1\n"
WORKER3 = """\
  - name: worker3
    role: worker
    macs: ["52:54:00:10:00:23"]
    ip: 10.20.0.23
    installDisk: /dev/sda
"""


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[tuple[str, Path, WSGIServerLogger]]:
    """A bare repository (branch main) behind dulwich's smart-HTTP server on loopback."""
    path = tmp_path / "srv" / "rack1.git"
    path.mkdir(parents=True)
    repo = Repo.init_bare(str(path), default_branch=b"main")
    app = make_wsgi_chain(DictBackend({"/rack1.git": repo}))  # limits reads to Content-Length
    server = make_server("127.0.0.1", 0, app, server_class=WSGIServerLogger,
                         handler_class=WSGIRequestHandlerLogger)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/rack1.git", path, server
    finally:
        server.shutdown()
        server.server_close()
        repo.close()


def _identity(tmp: Path) -> tuple[Path, str]:
    ident = x25519.Identity.generate()
    path = tmp / "age.key"
    path.write_text(f"# public key: {ident.to_public()}\n{ident}\n")
    path.chmod(0o600)
    return path, str(ident.to_public())


def _workdir(tmp: Path, url: str, recipients: list[str]) -> Path:
    work = tmp / "work"
    work.mkdir()
    text = (ROOT / "inventory.example.yaml").read_text()
    text = text.replace("# gitops:", "gitops:").replace(
        "#   repo: ssh://git@git.example.com/infra/rack1.git", f"  repo: {url}").replace(
        "#   branch: main", "  branch: main").replace(
        "#   path: clusters/{cluster}", "  path: clusters/{cluster}")
    if recipients:
        text += "secrets:\n  recipients:\n" + "".join(f"    - {r}\n" for r in recipients)
    (work / "inventory.yaml").write_text(text)
    shutil.copytree(GOLDEN_SECRETS, work / "secrets/rack1")
    return work


def cli(cwd: Path, *args: str, identity: Path | None = None
        ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != ENV_IDENTITY}
    env["PYTHONPATH"] = str(ROOT)
    if identity is not None:
        env[ENV_IDENTITY] = str(identity)
    return subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=180)


def needles() -> list[str]:
    return SecretsStore(GOLDEN_SECRETS, identity=None).load().secret_strings()


def head(path: Path) -> bytes | None:
    with Repo(str(path)) as repo:
        return repo.refs.as_dict().get(b"refs/heads/main")


def tree(path: Path, rev: bytes | None = None) -> dict[str, bytes]:
    with Repo(str(path)) as repo:
        c = repo[rev or repo.refs[b"refs/heads/main"]]
        assert isinstance(c, Commit)
        out = {}
        for e in iter_tree_contents(repo.object_store, c.tree):
            assert e.path is not None and e.sha is not None
            out[e.path.decode()] = repo.object_store[e.sha].as_raw_string()
        return out


def commit_of(path: Path, rev: bytes | None = None) -> Commit:
    with Repo(str(path)) as repo:
        c = repo[rev or repo.refs[b"refs/heads/main"]]
        assert isinstance(c, Commit)
        return c


def changed(path: Path) -> set[str]:
    """Files the branch head changed relative to its parent."""
    c = commit_of(path)
    before, after = tree(path, c.parents[0]), tree(path)
    return {p for p in set(before) | set(after) if before.get(p) != after.get(p)}


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_commit_refused_while_secrets_are_plain_or_have_no_recipients(
    tmp_path: Path, remote: tuple[str, Path, WSGIServerLogger]
) -> None:
    url, bare, _server = remote
    key, pub = _identity(tmp_path)
    work = _workdir(tmp_path, url, [pub])
    run = cli(work, "render", "-i", "inventory.yaml", "--commit", "--push")
    assert run.returncode == 3, run.stderr
    plain = work / "secrets/rack1/secrets.yaml"
    assert f"exists in plain form ({plain})" in run.stderr
    assert "cloudctl secrets encrypt -i inventory.yaml --remove-plain" in run.stderr
    # encrypted beside the plain files is not enough: the plain ones must go
    assert cli(work, "secrets", "encrypt", "-i", "inventory.yaml").returncode == 0
    run = cli(work, "render", "-i", "inventory.yaml", "--commit", identity=key)
    assert run.returncode == 3 and "exists in plain form" in run.stderr
    # no recipients: nothing to encrypt to
    (work / "inventory.yaml").write_text(
        (work / "inventory.yaml").read_text().split("secrets:\n  recipients:")[0])
    run = cli(work, "render", "-i", "inventory.yaml", "--commit")
    assert run.returncode == 3 and "no secrets.recipients" in run.stderr
    assert head(bare) is None and not (work / "clusters/rack1/gitops.git").exists()
    # no output directory and no --commit; --commit without a gitops section: exit 2, named
    run = cli(work, "render", "-i", "inventory.yaml")
    assert run.returncode == 2 and "--out: required (or use --commit)" in run.stderr
    shutil.copy(ROOT / "inventory.example.yaml", work / "no-gitops.yaml")
    run = cli(work, "render", "-i", "no-gitops.yaml", "--commit")
    assert run.returncode == 2 and "gitops: --commit needs a gitops section" in run.stderr


def test_commit_holds_only_the_encrypted_bundle_and_a_clone_renders_identically(
    tmp_path: Path, remote: tuple[str, Path, WSGIServerLogger]
) -> None:
    url, bare, _server = remote
    key, pub = _identity(tmp_path)
    work = _workdir(tmp_path, url, [pub])
    enc = cli(work, "secrets", "encrypt", "-i", "inventory.yaml", "--remove-plain")
    assert enc.returncode == 0, enc.stderr
    run = cli(work, "render", "-i", "inventory.yaml", "-o", "out", "--push", identity=key)
    assert run.returncode == 0, run.stderr
    assert "committed " in run.stdout and "pushed " in run.stdout
    assert "cloudctl: rack1: render" in run.stdout
    got = tree(bare)
    secrets = {p for p in got if p.startswith("secrets/")}
    assert secrets == {"secrets/rack1/secrets.yaml.age", "secrets/rack1/admin.yaml.age"}
    for p in secrets:
        assert got[p] == (work / p).read_bytes() and got[p].startswith(AGE_MAGIC)
    assert not any(p.startswith("talos/") or p.endswith("talosconfig") for p in got)
    message = commit_of(bare).message.decode()
    for needle in needles():  # no secret in any committed file, the message or the output
        assert all(needle.encode() not in data for data in got.values())
        assert needle not in message and needle not in run.stdout + run.stderr
    # the Git tree at gitops.path is the rendered gitops/ tree, byte for byte
    rendered = files_under(work / "out/gitops")
    assert {p[len("clusters/rack1/"):]: d for p, d in got.items()
            if p.startswith("clusters/rack1/")} == rendered

    # a fresh clone plus the identity renders exactly the same output
    clone = tmp_path / "clone"
    porcelain.clone(url, str(clone), branch=b"main", errstream=porcelain.NoneStream())
    shutil.copy(work / "inventory.yaml", clone / "inventory.yaml")
    assert not (clone / "secrets/rack1/secrets.yaml").exists()
    again = cli(clone, "render", "-i", "inventory.yaml", "-o", str(tmp_path / "out2"),
                "--require-secrets", identity=key)
    assert again.returncode == 0, again.stderr
    assert files_under(tmp_path / "out2") == files_under(work / "out")
    assert not (clone / "secrets/rack1/secrets.yaml").exists()  # decrypted in memory only
    # Flux's kustomize build of gitops.path is not touched by the secrets directory
    if shutil.which("kubectl"):
        built = subprocess.run(["kubectl", "kustomize", str(clone / "clusters/rack1")],
                               capture_output=True, text=True, timeout=120)
        assert built.returncode == 0, built.stderr
        assert "kind: HelmRelease" in built.stdout and "age-encryption" not in built.stdout

    # the same render again: no commit, nothing pushed, exit 0
    before = head(bare)
    noop = cli(work, "render", "-i", "inventory.yaml", "--commit", "--push", identity=key)
    assert noop.returncode == 0, noop.stderr
    assert "nothing to commit" in noop.stdout and "committed" not in noop.stdout
    assert head(bare) == before


def test_chart_bump_and_node_added_each_make_one_commit_naming_them(
    tmp_path: Path, remote: tuple[str, Path, WSGIServerLogger]
) -> None:
    url, bare, server = remote
    key, pub = _identity(tmp_path)
    work = _workdir(tmp_path, url, [pub])
    assert cli(work, "secrets", "encrypt", "-i", "inventory.yaml",
               "--remove-plain").returncode == 0
    first = cli(work, "render", "-i", "inventory.yaml", "--push", identity=key)
    assert first.returncode == 0, first.stderr
    base = head(bare)

    inv = work / "inventory.yaml"
    inv.write_text(inv.read_text().replace("  cilium: {enabled: true}",
                                           "  cilium: {enabled: true, version: 1.19.7}"))
    plan = cli(work, "render", "-i", "inventory.yaml", "--commit", "--plan", identity=key)
    assert plan.returncode == 0, plan.stderr
    assert "would commit" in plan.stdout and "cilium 1.19.6 -> 1.19.7" in plan.stdout
    # --commit alone commits into the local clone; the remote moves only with --push
    bump = cli(work, "render", "-i", "inventory.yaml", "--commit", identity=key)
    assert bump.returncode == 0, bump.stderr
    assert "not pushed" in bump.stdout and head(bare) == base
    push = cli(work, "render", "-i", "inventory.yaml", "--push", identity=key)
    assert push.returncode == 0, push.stderr
    assert "nothing new to commit" in push.stdout and "pushed " in push.stdout
    assert commit_of(bare).parents == [base]
    # exactly that HelmRelease changed (the tree's README names charts, not versions;
    # secrets are not re-encrypted)
    assert changed(bare) == {"clusters/rack1/platform/releases/cilium.yaml"}
    message = commit_of(bare).message.decode()
    assert message.splitlines()[0] == "cloudctl: rack1: cilium 1.19.6 -> 1.19.7"
    assert "Release cilium: chart cilium 1.19.6 -> 1.19.7" in message
    assert "Values changed" not in message

    bumped = head(bare)
    inv.write_text(inv.read_text().replace(
        '    installDiskSelector: {model: "SAMSUNG MZ7*"}\n',
        '    installDiskSelector: {model: "SAMSUNG MZ7*"}\n' + WORKER3))
    node = cli(work, "render", "-i", "inventory.yaml", "--push", identity=key)
    assert node.returncode == 0, node.stderr
    assert commit_of(bare).parents == [bumped]
    assert changed(bare) == {".cloudctl/rack1/cluster.yaml"}
    message = commit_of(bare).message.decode()
    assert "+node worker3" in message.splitlines()[0]
    assert "Nodes added: worker3 (worker 10.20.0.23)" in message

    # the remote goes away: exit 6 naming it, the remote and the local clone as they were
    server.shutdown()
    server.server_close()
    inv.write_text(inv.read_text().replace("version: 1.19.7", "version: 1.19.8"))
    cache = work / "clusters/rack1/gitops.git"
    with Repo(str(cache)) as clone:
        before = clone.refs.as_dict()
    remote_before = head(bare)
    down = cli(work, "render", "-i", "inventory.yaml", "--push", identity=key)
    assert down.returncode == 6, down.stderr
    assert f"git fetch {url}" in down.stderr
    assert head(bare) == remote_before
    with Repo(str(cache)) as clone:
        assert clone.refs.as_dict() == before
