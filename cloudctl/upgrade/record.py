"""``<cluster dir>/upgrade.json``: the upgrade in progress and what it replaces.

It records, before anything changes, the versions the cluster ran (per node Talos version and
installer image, kubelet and control-plane versions, each HelmRelease's chart version and
values) and the GitOps revision — the rollback record — then, as the upgrade goes, which
changes are done and the one in flight (for a Talos upgrade: the boot ID the node had when
the Upgrade call was sent, so a resumed run waits for that reboot instead of upgrading the
node a second time). Written atomically after every step; no secrets.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import write_atomic
from ..errors import StateError
from .plan import LiveFacts

UPGRADE_FILE = "upgrade.json"
VERSION = 1

RUNNING, FAILED, INTERRUPTED, DONE = "running", "failed", "interrupted", "done"


@dataclass
class InFlight:
    key: str
    boot_id: str = ""
    sent: bool = False
    """The Upgrade call was sent: never send it again for this change."""


@dataclass
class UpgradeRecord:
    cluster: str
    status: str = RUNNING
    started: str = ""
    finished: str = ""
    previous: dict[str, Any] = field(default_factory=dict)
    target: dict[str, Any] = field(default_factory=dict)
    plan: list[dict[str, Any]] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    current: InFlight | None = None
    error: str = ""
    version: int = VERSION

    @property
    def unfinished(self) -> bool:
        return self.status != DONE


def previous_of(facts: LiveFacts, git_revision: str | None) -> dict[str, Any]:
    """The rollback record: what runs now."""
    return {
        "nodes": {n: {"talos": f.talos_version, "installer_image": f.installer_image,
                      "kubelet": f.kubelet_version, "api_server": f.api_server_version}
                  for n, f in facts.nodes.items()},
        "releases": {n: {"chart": r.chart, "version": r.version, "values": r.values}
                     for n, r in (facts.releases or {}).items()},
        "git_revision": git_revision,
    }


class RecordFile:
    def __init__(self, cluster_dir: Path, cluster: str) -> None:
        self.path = cluster_dir / UPGRADE_FILE
        self.cluster = cluster

    def load(self) -> UpgradeRecord | None:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StateError(f"{self.path}: not a readable upgrade record ({exc}); move it "
                             "away to start over") from None
        if not isinstance(raw, dict) or raw.get("version") != VERSION or \
                raw.get("cluster") != self.cluster:
            raise StateError(f"{self.path}: not an upgrade record of cluster {self.cluster} "
                             f"(version {VERSION}); move it away to start over")
        current = raw.pop("current", None)
        try:
            rec = UpgradeRecord(**raw)
            rec.current = InFlight(**current) if current else None
        except TypeError as exc:
            raise StateError(f"{self.path}: unexpected content ({exc})") from None
        return rec

    def save(self, rec: UpgradeRecord) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(asdict(rec), indent=2, sort_keys=True) + "\n",
                     mode=0o600)
