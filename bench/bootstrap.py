"""``cloudctl bootstrap --emulate`` on a synthetic rack of N nodes; prints stage timings.

    python bench/bootstrap.py [--nodes 100] [--keep]

Runs the real CLI in a subprocess (as an operator would) in a temp dir holding the synthetic
inventory (``cloudctl.inventory.synthetic``); the emulated rack (N Talos nodes over Ed25519
mTLS + the Kubernetes API emulator) runs as its own process on the same 2 cores, so the
numbers include the emulators' CPU time. Stage times come from the ``-o json`` event stream.
Target (issue 5): discover -> platform Ready for 100 nodes in <= 30 s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from cloudctl.inventory.synthetic import synthetic_inventory

CLI = [sys.executable, "-c", "from cloudctl.cli import main; main()"]


def run(nodes: int, keep: bool) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="cloudctl-bench-bootstrap-"))
    inv = tmp / "inventory.yaml"
    inv.write_text(yaml.safe_dump(synthetic_inventory(nodes), sort_keys=False))
    t0 = time.monotonic()
    p = subprocess.run([*CLI, "bootstrap", "--emulate", "-o", "json", "--timeout", "300",
                        "-i", str(inv)], cwd=tmp, capture_output=True, text=True)
    wall = time.monotonic() - t0
    try:
        events = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
        start: dict[str, float] = {}
        took: dict[str, float] = {}
        for e in events:
            if e["kind"] == "stage-start":
                start[e["stage"]] = e["ts"]
            elif e["kind"] in ("stage-done", "stage-skipped") and e["stage"] in start:
                took[e["stage"]] = e["ts"] - start[e["stage"]]
        print(f"{nodes} nodes, exit {p.returncode}, wall {wall:.1f}s (CLI process incl. "
              "imports, rack start)")
        for stage, secs in took.items():
            print(f"  {stage:10} {secs:7.2f}s")
        if "discover" in start and "platform" in took:
            span = start["platform"] + took["platform"] - start["discover"]
            print(f"  discover -> platform Ready: {span:.2f}s (target <= 30 s)")
        if p.returncode:
            print(p.stderr[-2000:], file=sys.stderr)
        return p.returncode
    finally:
        subprocess.run([*CLI, "emulate", "stop", "-i", str(inv)], cwd=tmp, capture_output=True)
        if not keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (state, events)")
    args = ap.parse_args()
    return run(args.nodes, args.keep)


if __name__ == "__main__":
    sys.exit(main())
