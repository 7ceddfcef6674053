"""``cloudctl tenant``: the inventory's tenant clusters on the management cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..cli import (
    EXIT_CODES,
    _load,
    cluster_dir_option,
    format_option,
    handle_errors,
    inventory_option,
)


@click.group(epilog=EXIT_CODES)
def tenant() -> None:
    """Tenant clusters (the inventory's `tenants:`): Kamaji control planes in the management
    cluster, Cluster API KubeVirt machines as workers.

    They are created and changed by editing the inventory: `cloudctl bootstrap` (direct mode:
    it applies gitops/tenants/ and deletes what left it; reruns skip what is converged) or, in
    GitOps mode, `cloudctl render --commit` (Flux's Kustomization cloudctl-tenants applies
    it). These commands read the management cluster through <cluster dir>/kubeconfig; no
    kubeconfig there is exit 5, an API that does not answer exit 6, a NAME not in the
    inventory exit 2.
    """


def _kube(inventory_path: Path, cluster_dir: Path | None) -> tuple[Any, Any]:
    from ..errors import EnvironmentNotReady
    from ..kube import Kube
    from ..pipeline.context import KUBECONFIG, default_cluster_dir

    inv = _load(inventory_path).inventory
    directory = cluster_dir or default_cluster_dir(inventory_path, inv.cluster.name)
    kubeconfig = directory / KUBECONFIG
    if not kubeconfig.is_file():
        raise EnvironmentNotReady(f"no kubeconfig at {kubeconfig}: bootstrap the cluster first")
    return inv, Kube.from_kubeconfig(kubeconfig)


def _tenant_of(inv: Any, name: str) -> Any:
    from ..errors import InputError, Problem

    for t in inv.tenants:
        if t.name == name:
            return t
    known = ", ".join(t.name for t in inv.tenants) or "none"
    raise InputError(Problem("NAME", f"no tenant {name!r} in the inventory (tenants: {known})"))


def _text(st: Any) -> str:
    pools = ", ".join(f"{p.name} {p.ready}/{p.desired}" for p in st.pools) or "-"
    return (f"{st.name:<16} {'Ready' if st.ready else 'NotReady':<9} {st.phase:<13} "
            f"{st.control_plane:<6} {st.version or '-':<9} {pools}")


HEADER = f"{'NAME':<16} {'READY':<9} {'PHASE':<13} {'CP':<6} {'VERSION':<9} WORKERS (ready/desired)"


@tenant.command(name="list", epilog=EXIT_CODES)
@inventory_option
@cluster_dir_option
@format_option
@handle_errors
def list_cmd(inventory_path: Path, cluster_dir: Path | None, output_format: str) -> None:
    """Every tenant of the inventory with its state on the cluster, plus any tenant cloudctl
    created earlier that the inventory no longer has (being removed)."""
    from ..kube.tenants import list_tenants, read_tenant
    from ..pipeline.tenants import wants

    inv, kube = _kube(inventory_path, cluster_dir)
    with kube:
        rows = [read_tenant(kube, w.name, w) for w in wants(inv)]
        listed = {r.name for r in rows}
        rows += [t for t in list_tenants(kube) if t.name not in listed]
    if output_format == "json":
        click.echo(json.dumps([r.as_dict() for r in rows], sort_keys=True))
        return
    click.echo(HEADER)
    for r in rows:
        click.echo(_text(r))


@tenant.command(epilog=EXIT_CODES)
@click.argument("name")
@inventory_option
@cluster_dir_option
@format_option
@handle_errors
def status(name: str, inventory_path: Path, cluster_dir: Path | None, output_format: str) -> None:
    """One tenant: Cluster phase, control plane (ready/desired replicas, endpoint), ready
    machines per worker pool, and what it still waits for. Exit 0 when Ready, 8 when not."""
    from ..errors import PlatformError
    from ..kube.tenants import read_tenant
    from ..pipeline.tenants import wants

    inv, kube = _kube(inventory_path, cluster_dir)
    _tenant_of(inv, name)
    want = next(w for w in wants(inv) if w.name == name)
    with kube:
        st = read_tenant(kube, name, want)
    if output_format == "json":
        click.echo(json.dumps(st.as_dict(), sort_keys=True))
    else:
        click.echo(f"tenant:        {st.name} (namespace {st.namespace})")
        click.echo(f"phase:         {st.phase}")
        click.echo(f"control plane: {st.control_plane} ready, version {st.version or '-'}, "
                   f"endpoint {st.endpoint or '-'}")
        for p in st.pools:
            click.echo(f"pool {p.name}: {p.ready}/{p.desired} ready ({p.replicas} machines)")
        click.echo(f"status:        {st.detail}")
    if not st.ready:
        raise PlatformError(f"tenant {name} is not Ready: {st.detail}")


@tenant.command(epilog=EXIT_CODES)
@click.argument("name")
@inventory_option
@cluster_dir_option
@click.option("--out", "out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Where to write it [default: <cluster dir>/tenants/NAME.kubeconfig].")
@handle_errors
def kubeconfig(name: str, inventory_path: Path, cluster_dir: Path | None,
               out: Path | None) -> None:
    """Write the tenant's admin kubeconfig (from its NAME-kubeconfig Secret) to a file, mode
    0600; prints only the path (the file holds a client key)."""
    from ..kube.tenants import tenant_kubeconfig
    from ..pipeline.context import default_cluster_dir
    from ..secrets.store import write_private

    inv, kube = _kube(inventory_path, cluster_dir)
    _tenant_of(inv, name)
    with kube:
        data = tenant_kubeconfig(kube, name)
    directory = cluster_dir or default_cluster_dir(inventory_path, inv.cluster.name)
    target = out or directory / "tenants" / f"{name}.kubeconfig"
    write_private(target, data)
    click.echo(str(target))


COMMANDS = [tenant]
