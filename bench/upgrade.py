"""``cloudctl upgrade --emulate``: a rolling Talos upgrade of a synthetic N-node rack.

    python bench/upgrade.py [--nodes 100] [--keep]

Bootstraps the synthetic inventory (``cloudctl.inventory.synthetic``) on Talos v1.13.5 with
``bootstrap --emulate``, bumps it to v1.13.6 and runs the real CLI ``upgrade -o json``. Per node
the event stream gives the time from ``node-start`` to ``node-done`` (gates, cordon, drain,
Upgrade call, reboot wait, version check, config pin, Ready, uncordon, etcd check). The emulated
machine's own install + reboot time (``Rack.install_delay + reboot_delay``) is subtracted to
give cloudctl's own time per node. There is no peer to compare with here (no talosctl binary
can be had offline), so the ratio printed is cloudctl's time per node over the emulated reboot.
Both processes (CLI and emulated rack) share the same 2 cores.
"""

from __future__ import annotations

import argparse
import inspect
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from cloudctl.emulate.talos_rack import Rack
from cloudctl.inventory.synthetic import synthetic_inventory

CLI = [sys.executable, "-c", "from cloudctl.cli import main; main()"]
OLD, NEW = "v1.13.5", "v1.13.6"


def _emulated_reboot() -> float:
    params = inspect.signature(Rack.__init__).parameters
    return float(params["install_delay"].default) + float(params["reboot_delay"].default)


def run(nodes: int, keep: bool) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="cloudctl-bench-upgrade-"))
    inv = tmp / "inventory.yaml"
    doc = synthetic_inventory(nodes, talos_version=OLD)
    inv.write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        t0 = time.monotonic()
        boot = subprocess.run([*CLI, "bootstrap", "--emulate", "--timeout", "600", "-i",
                               str(inv)], cwd=tmp, capture_output=True, text=True)
        if boot.returncode:
            print(boot.stderr[-2000:], file=sys.stderr)
            return boot.returncode
        print(f"bootstrap of {nodes} nodes: {time.monotonic() - t0:.1f}s")
        doc["cluster"]["talosVersion"] = NEW
        inv.write_text(yaml.safe_dump(doc, sort_keys=False))
        t0 = time.monotonic()
        p = subprocess.run([*CLI, "upgrade", "--emulate", "-o", "json", "--timeout", "120",
                            "-i", str(inv)], cwd=tmp, capture_output=True, text=True)
        wall = time.monotonic() - t0
        if p.returncode:
            print(p.stderr[-2000:], file=sys.stderr)
            return p.returncode
        events = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
        start: dict[str, float] = {}
        took: list[float] = []
        for e in events:
            if e["kind"] == "node-start":
                start[e["node"]] = e["ts"]
            elif e["kind"] == "node-done":
                took.append(e["ts"] - start[e["node"]])
        reboot = _emulated_reboot()
        own = [t - reboot for t in took]
        print(f"upgrade of {len(took)} nodes one at a time: wall {wall:.1f}s (CLI incl. "
              "imports, facts, plan)")
        print(f"  per node: median {statistics.median(took):.3f}s, p90 "
              f"{sorted(took)[int(len(took) * 0.9) - 1]:.3f}s, max {max(took):.3f}s")
        print(f"  emulated install + reboot per node: {reboot:.3f}s")
        print(f"  cloudctl's own time per node (beyond the emulated reboot): median "
              f"{statistics.median(own):.3f}s")
        print(f"  ratio node time / emulated reboot: {statistics.median(took) / reboot:.1f}x "
              "(no talosctl peer can run here)")
        return 0
    finally:
        subprocess.run([*CLI, "emulate", "stop", "-i", str(inv)], cwd=tmp, capture_output=True)
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()
    return run(args.nodes, args.keep)


if __name__ == "__main__":
    sys.exit(main())
