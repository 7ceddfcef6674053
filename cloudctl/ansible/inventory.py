"""A cloudctl inventory as Ansible sees it: hosts, groups and variables. Pure.

Groups: ``controlplane`` and ``worker`` (every node by role, ``ansible_host`` its SSH address
or IP), ``ssh`` (nodes with an ``ssh:`` section: port, user, the private key file ansible-runner
gets for the run, host keys checked against a known_hosts file) and the host ``localhost``
(``ansible_connection: local``, the Python running Ansible). Talos nodes have no SSH server: a
hook acts on them from ``localhost`` (the API, the kubeconfig) or targets ``ssh``.

Extra variables: the inventory itself as plain JSON data (YAML field names) under ``cloudctl``,
plus ``cloudctl_stage``, ``cloudctl_inventory_file``, ``cloudctl_cluster_dir`` and
``cloudctl_kubeconfig`` for hooks, then the hook's own ``extraVars``.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..inventory.models import Inventory

LOCALHOST = "localhost"
RESERVED_VARS = ("cloudctl", "cloudctl_stage", "cloudctl_inventory_file",
                 "cloudctl_cluster_dir", "cloudctl_kubeconfig")
"""Extra variables cloudctl sets; a hook's ``extraVars`` may not redefine them."""


def key_path(key_dir: Path, host: str) -> Path:
    """Where the runner writes ``host``'s private key (inside its private data directory)."""
    return key_dir / f"{host}.key"


def ssh_common_args(known_hosts: Path | None) -> str:
    """OpenSSH options for every SSH host: host keys are always checked (never accepted
    blindly), only the given key is offered, and no password is ever asked for."""
    opts = ["StrictHostKeyChecking=yes", "IdentitiesOnly=yes", "PasswordAuthentication=no",
            "KbdInteractiveAuthentication=no"]
    if known_hosts is not None:
        opts += [f"UserKnownHostsFile={known_hosts}", "GlobalKnownHostsFile=/dev/null"]
    return " ".join(f"-o {shlex.quote(o)}" for o in opts)


def ssh_host_vars(address: str, port: int, user: str, key_file: Path,
                  known_hosts: Path | None) -> dict[str, Any]:
    return {
        "ansible_host": address,
        "ansible_port": port,
        "ansible_user": user,
        "ansible_ssh_private_key_file": str(key_file),
        "ansible_ssh_common_args": ssh_common_args(known_hosts),
        "ansible_python_interpreter": "auto_silent",
    }


def _localhost() -> dict[str, Any]:
    return {LOCALHOST: {"ansible_connection": "local",
                        "ansible_python_interpreter": "{{ ansible_playbook_python }}"}}


def ansible_inventory(inv: Inventory, *, key_dir: Path,
                      known_hosts: Path | None) -> dict[str, Any]:
    """The Ansible inventory (YAML/JSON inventory structure) of ``inv``."""
    roles: dict[str, dict[str, Any]] = {"controlplane": {}, "worker": {}}
    ssh: dict[str, Any] = {}
    for node in inv.nodes:
        roles[node.role][node.name] = {
            "ansible_host": node.ssh_address if node.ssh else str(node.ip),
            "cloudctl_node": node.name,
            "cloudctl_role": node.role,
            "cloudctl_ip": str(node.ip),
        }
        if node.ssh is not None:
            ssh[node.name] = ssh_host_vars(node.ssh_address, node.ssh.port, node.ssh.user,
                                           key_path(key_dir, node.name), known_hosts)
    return {"all": {
        "hosts": _localhost(),
        "children": {
            "controlplane": {"hosts": roles["controlplane"]},
            "worker": {"hosts": roles["worker"]},
            "ssh": {"hosts": ssh},
        },
    }}


def single_host_inventory(name: str, address: str, *, port: int, user: str, key_dir: Path,
                          known_hosts: Path | None) -> dict[str, Any]:
    """One SSH host ``name`` (group ``ssh``) plus ``localhost``: for commands that act on a
    machine outside the inventory (``cloudctl lab prepare-host``)."""
    host = ssh_host_vars(address, port, user, key_path(key_dir, name), known_hosts)
    return {"all": {"hosts": _localhost(), "children": {"ssh": {"hosts": {name: host}}}}}


def extravars(inv: Inventory, *, stage: str, inventory_file: Path, cluster_dir: Path,
              kubeconfig: Path, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The variables a hook playbook sees: ``extra`` (the hook's ``extraVars``) and cloudctl's
    own (``RESERVED_VARS``; ``extra`` naming one of them is refused earlier)."""
    own = {
        "cloudctl": inv.model_dump(mode="json", by_alias=True),
        "cloudctl_stage": stage,
        "cloudctl_inventory_file": str(inventory_file),
        "cloudctl_cluster_dir": str(cluster_dir),
        "cloudctl_kubeconfig": str(kubeconfig),
    }
    return {**dict(extra or {}), **own}
