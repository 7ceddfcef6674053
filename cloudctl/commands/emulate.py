"""``cloudctl emulate start|stop|status``: the emulated rack used by ``bootstrap --emulate``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..cli import (
    EXIT_CODES,
    _load,
    cluster_dir_option,
    cluster_paths,
    handle_errors,
    inventory_option,
    secrets_option,
)

# --------------------------------------------------------------------------- emulate


@click.group()
def emulate() -> None:
    """The emulated rack (Talos nodes + Kubernetes API) used by ``bootstrap --emulate``."""


FAULT_HELP = """\b
Fault injection (for rehearsal): --fault KIND:TARGET[:key=value,key=value]
(repeatable) and/or --faults FILE, a YAML list of {kind, target, key: value}.
A value may contain ':' and ','; parameters split at ',' before 'key='.
  release-fails:RELEASE[:times=N,reason=R,message=M]
      HelmRelease RELEASE (flux-system) fails its Helm install/upgrade N
      times, then succeeds (no times: always fails); helm-controller retries
      per spec.install.remediation.retries (-1: forever) and stalls with
      RetriesExceeded once they are used up.
  node-unreachable:NODE          the node's Talos API refuses connections
  node-slow:NODE[:seconds=S]     every Talos API call waits S s (default 2)
  apply-rejected:NODE[:message=M]  ApplyConfiguration fails with M
  upgrade-rollback:NODE          an upgrade rolls back to the old version
  etcd-unhealthy:NODE[:message=M]  the node's etcd member reports error M
  pdb-blocks-drain:NODE[:policy=IfHealthyBudget|AlwaysAllow,pod=unhealthy]
      a pod pinned to NODE under a PDB maxUnavailable 0 (default/drain-guard):
      draining NODE is refused (pod=unhealthy + AlwaysAllow: evictable)
  storage-not-uptodate:RESOURCE[:node=NODE,state=S]
      LINSTOR resource RESOURCE is UpToDate only on NODE (others in state S,
      default Outdated)
  component-not-deployed:kubevirt|cdi[:reason=R,message=M]
      the operator never finishes: the CR stays phase Deploying with
      Available=False, Degraded=True (R, M)
NODE is an inventory node name, RELEASE a platform HelmRelease name. Faults
are fixed for the life of the rack; `emulate status` lists them. A rack
already running with other faults is an error (exit 5): stop it first.
"""


@emulate.command("start", epilog=FAULT_HELP + "\n" + EXIT_CODES)
@inventory_option
@secrets_option
@cluster_dir_option
@click.option("--fault", "fault_specs", multiple=True, metavar="KIND:TARGET[:k=v,...]",
              help="Inject a fault (repeatable); see below.")
@click.option("--faults", "faults_file", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML file: a list of {kind, target, key: value} faults.")
@handle_errors
def emulate_start(
    inventory_path: Path, secrets_dir: Path | None, cluster_dir: Path | None,
    fault_specs: tuple[str, ...], faults_file: Path | None,
) -> None:
    """Start the emulated rack in the background (or report the running one)."""
    from ..emulate.faults import Fault, parse_fault, parse_faults_document
    from ..emulate.rack_control import rack_faults, start_rack
    from ..errors import InputError, Problem
    from ..secrets import SecretsStore

    faults: list[Fault] = [parse_fault(spec) for spec in fault_specs]
    if faults_file is not None:
        try:
            text = faults_file.read_text()
        except OSError as exc:
            raise InputError(
                Problem("--faults", f"cannot read {faults_file}: {exc.strerror}")
            ) from None
        faults += parse_faults_document(text, source=str(faults_file))
    inv = _load(inventory_path).inventory
    rack_faults(inventory_path, faults)  # bad targets fail before anything is written
    directory, secrets = cluster_paths(inventory_path, inv.cluster.name, cluster_dir,
                                       secrets_dir)
    _, created = SecretsStore(secrets).init()
    if created:
        click.echo(f"secrets bundle written to {secrets} (0600)")
    info, started = start_rack(inventory_path, secrets, directory,
                               faults=faults, exact_faults=True)
    verb = "started" if started else "already running"
    click.echo(f"emulated rack {verb}: pid {info.pid}, Talos API port {info.talos_port} "
               f"(node a.b.c.d on 127.b.c.d), Kubernetes API {info.kube_api_url}")
    for spec in info.raw.get("faults") or []:
        click.echo(f"  fault: {spec}")


@emulate.command("stop", epilog=EXIT_CODES)
@inventory_option
@cluster_dir_option
@handle_errors
def emulate_stop(inventory_path: Path, cluster_dir: Path | None) -> None:
    """Stop the emulated rack of this cluster (also when the inventory has been edited into an
    invalid state: only its cluster name is needed)."""
    from ..emulate.rack_control import stop_rack
    from ..errors import InputError

    try:
        name = _load(inventory_path).inventory.cluster.name
    except InputError:
        name = _cluster_name_only(inventory_path)
        if name is None:
            raise
    directory, _ = cluster_paths(inventory_path, name, cluster_dir)
    click.echo("emulated rack stopped" if stop_rack(directory) else "no emulated rack running")


def _cluster_name_only(path: Path) -> str | None:
    """``cluster.name`` of an inventory that does not validate, if it is a DNS label."""
    import re

    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
        name = doc["cluster"]["name"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    ok = isinstance(name, str) and re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name)
    return name if ok else None


@emulate.command("status", epilog=EXIT_CODES)
@inventory_option
@cluster_dir_option
@handle_errors
def emulate_status(inventory_path: Path, cluster_dir: Path | None) -> None:
    """Print the running rack's rack.json (pid, ports, faults, counters) or exit 5."""
    from ..emulate.rack_control import read_rack
    from ..errors import EnvironmentNotReady

    inv = _load(inventory_path).inventory
    directory, _ = cluster_paths(inventory_path, inv.cluster.name, cluster_dir)
    info = read_rack(directory)
    if info is None:
        raise EnvironmentNotReady(f"no emulated rack running for {directory}")
    click.echo(json.dumps(info.raw, indent=2, sort_keys=True))


COMMANDS = [emulate]
