"""Ansible through ansible-runner: inventory hooks and the playbooks cloudctl ships.

``inventory`` (pure) turns a cloudctl inventory into an Ansible inventory and extra variables;
``events`` (pure) turns ansible-runner's events into cloudctl events and finds the failures;
``runner`` runs a playbook in a private, deleted-afterwards data directory with the SSH keys
the inventory references. ``playbook(name)`` is a playbook shipped in ``playbooks/``.
"""

from __future__ import annotations

from pathlib import Path

from .events import AnsibleEvent, Failure, failure_of, translate
from .inventory import ansible_inventory, extravars, single_host_inventory
from .runner import PlaybookResult, PlaybookRun, SshKey, inventory_keys, run_playbook

PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"


def playbook(name: str) -> Path:
    """A playbook shipped with cloudctl (``cloudctl/ansible/playbooks/<name>``)."""
    return PLAYBOOKS / name


__all__ = [
    "PLAYBOOKS",
    "AnsibleEvent",
    "Failure",
    "PlaybookResult",
    "PlaybookRun",
    "SshKey",
    "ansible_inventory",
    "extravars",
    "failure_of",
    "inventory_keys",
    "playbook",
    "run_playbook",
    "single_host_inventory",
    "translate",
]
