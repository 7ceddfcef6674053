"""Start, find and stop the detached emulated-rack process of a cluster directory.

The rack runs as its own session (``start_new_session``), logs to ``<cluster dir>/emulator/
rack.log`` and announces itself in ``<cluster dir>/emulator/rack.json``; a killed ``cloudctl``
leaves it running and the next run reuses it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import write_atomic
from ..errors import EnvironmentNotReady
from .faults import Fault, FaultSet

EMULATOR_DIR = "emulator"
RACK_FILE = "rack.json"
FAULTS_FILE = "faults.json"


@dataclass(frozen=True)
class RackInfo:
    pid: int
    talos_port: int
    kube_api_url: str
    raw: dict[str, Any]


def emulator_dir(cluster_dir: Path) -> Path:
    return cluster_dir / EMULATOR_DIR


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" not in status


def read_rack(cluster_dir: Path) -> RackInfo | None:
    """The running rack of this cluster directory, or None."""
    path = emulator_dir(cluster_dir) / RACK_FILE
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid = int(raw.get("pid", 0))
    if not pid or not _alive(pid):
        return None
    return RackInfo(pid, int(raw["talos_port"]), str(raw["kube_api_url"]), raw)


def platform_release_names() -> list[str]:
    """HelmRelease names of the platform catalog (``flux/platform.yaml`` ``releases:``)."""
    import yaml

    from ..resources import read_text

    doc = yaml.safe_load(read_text("flux", "platform.yaml")) or {}
    return sorted(str(name) for name in doc.get("releases") or {})


def rack_faults(inventory: Path, faults: Sequence[str | Fault]) -> FaultSet:
    """Parse the fault specs and check their targets against the inventory and the platform
    (:class:`~cloudctl.errors.InputError`, exit 2, naming the spec)."""
    if not faults:
        return FaultSet(())
    from ..inventory import load_inventory

    inv = load_inventory(inventory).inventory
    return FaultSet.build(
        faults, nodes=[n.name for n in inv.nodes], releases=platform_release_names()
    )


def start_rack(
    inventory: Path,
    secrets_dir: Path,
    cluster_dir: Path,
    *,
    faults: Sequence[str | Fault] = (),
    exact_faults: bool = False,
    release_delay: float | None = None,
    retry_interval: float | None = None,
    timeout: float = 60.0,
) -> tuple[RackInfo, bool]:
    """Reuse the running rack or start one with these faults; (info, started).

    A running rack is reused when no faults are asked for (unless ``exact_faults``: then it
    must run without faults too) or when it runs exactly these faults; otherwise
    :class:`EnvironmentNotReady` (exit 5) names its pid and faults: faults are fixed for the
    life of a rack, stop it first."""
    wanted = rack_faults(inventory, faults)
    info = read_rack(cluster_dir)
    if info is not None:
        running = [str(f) for f in info.raw.get("faults") or []]
        if (faults or exact_faults) and running != wanted.specs():
            have = ", ".join(running) or "none"
            want = ", ".join(wanted.specs()) or "none"
            raise EnvironmentNotReady(
                f"an emulated rack is already running for {cluster_dir} (pid {info.pid}) with "
                f"faults: {have}; asked for: {want}. Faults are fixed when a rack starts: stop "
                f"it with `cloudctl emulate stop -i {inventory}` and start it again."
            )
        return info, False
    directory = emulator_dir(cluster_dir)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / RACK_FILE).unlink(missing_ok=True)
    faults_path = directory / FAULTS_FILE
    write_atomic(faults_path, json.dumps(wanted.as_list(), indent=2), mode=0o600, fsync=False)
    cmd = [
        sys.executable, "-m", "cloudctl.emulate.rack",
        "-i", str(inventory.resolve()),
        "--secrets", str(secrets_dir.resolve()),
        "--dir", str(directory.resolve()),
        "--faults", str(faults_path.resolve()),
    ]
    if release_delay is not None:
        cmd += ["--release-delay", str(release_delay)]
    if retry_interval is not None:
        cmd += ["--retry-interval", str(retry_interval)]
    log = open(directory / "rack.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = read_rack(cluster_dir)
        if info is not None and info.pid == proc.pid:
            return info, True
        if proc.poll() is not None:
            tail = (directory / "rack.log").read_text(errors="replace")[-2000:]
            raise EnvironmentNotReady(
                f"emulated rack exited with status {proc.returncode}:\n{tail}"
            )
        time.sleep(0.05)
    proc.kill()
    raise EnvironmentNotReady(f"emulated rack did not start within {timeout:g}s")


def stop_rack(cluster_dir: Path, *, timeout: float = 15.0) -> bool:
    """Stop the rack of this cluster directory; False when none was running."""
    info = read_rack(cluster_dir)
    if info is None:
        return False
    os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(info.pid):
            return True
        time.sleep(0.05)
    os.kill(info.pid, signal.SIGKILL)
    return True
