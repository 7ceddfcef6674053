"""An idle emulated rack: CPU it uses while nothing happens, before and after bootstrap.

    python bench/idle_rack.py [--nodes 100] [--seconds 10]

Starts `cloudctl emulate start` on a synthetic N-node inventory in a temp dir, measures the
rack process's CPU time (utime + stime from /proc) over --seconds while idle, runs
`cloudctl bootstrap --emulate` (its wall time is printed too), waits 3 s, and measures again.
No peer: the figure is compared with the goal (issue 14: <= 1 % of a core).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from cloudctl.inventory.synthetic import synthetic_inventory


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_share(pid: int, seconds: float) -> float:
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=10.0)
    a = ap.parse_args()
    cli = [sys.executable, "-m", "cloudctl"]
    with tempfile.TemporaryDirectory(prefix="cloudctl-idle-") as tmp:
        inv = Path(tmp) / "inventory.yaml"
        inv.write_text(yaml.safe_dump(synthetic_inventory(a.nodes), sort_keys=False))
        subprocess.run([*cli, "emulate", "start", "-i", str(inv)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            rack = next(Path(tmp).glob("clusters/*/emulator/rack.json"))
            pid = int(json.loads(rack.read_text())["pid"])
            before = idle_share(pid, a.seconds)
            t = time.perf_counter()
            subprocess.run([*cli, "bootstrap", "--emulate", "-i", str(inv)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            boot = time.perf_counter() - t
            time.sleep(3)
            after = idle_share(pid, a.seconds)
        finally:
            subprocess.run([*cli, "emulate", "stop", "-i", str(inv)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"{a.nodes}-node emulated bootstrap, CLI wall time: {boot:.1f} s (goal <= 5 s)")
    print(f"idle emulated {a.nodes}-node rack: {100 * before:.2f} % of a core before "
          f"bootstrap, {100 * after:.2f} % after (goal <= 1 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
