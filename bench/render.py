"""Render throughput: 10 / 100 / 1,000 nodes (PKI generated once). Run by hand:

    python bench/render.py [--sizes 10,100,1000] [--repeat 3] [--e2e-nodes 1000]

Prints wall time per size (best of N) and the per-node cost, so growth can be judged linear.
Target (issue 2): 1,000 nodes in <= 2 s on a 2-core machine.

Then the end-to-end figure (issue 14): a fresh ``cloudctl render -i inventory.yaml -o out``
process (parse, check, secrets, render, write, swap), timed into an empty directory and as a
no-change rerun, best and median of N, with the load average (other work on the machine
shows there). Target: 1,000 nodes under 1 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from cloudctl.inventory import parse_inventory
from cloudctl.inventory.synthetic import synthetic_inventory
from cloudctl.render import render_all
from cloudctl.secrets import generate_bundle


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--e2e-nodes", type=int, default=1000, help="0: skip the end-to-end figure")
    ap.add_argument("--e2e-repeat", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where the end-to-end run writes ($TMPDIR)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    bundle = generate_bundle()
    print(f"PKI generated once: {time.perf_counter() - t0:.2f} s")
    print(f"{'nodes':>6} {'parse+check s':>14} {'render s':>9} {'files':>6} {'ms/node':>8}")
    for n in (int(s) for s in args.sizes.split(",")):
        text = yaml.safe_dump(synthetic_inventory(n), sort_keys=False)
        best_parse = best_render = float("inf")
        files = {}
        for _ in range(args.repeat):
            t = time.perf_counter()
            inv = parse_inventory(text, f"synthetic-{n}").inventory
            best_parse = min(best_parse, time.perf_counter() - t)
            t = time.perf_counter()
            files = render_all(inv, bundle)
            best_render = min(best_render, time.perf_counter() - t)
        print(
            f"{n:>6} {best_parse:>14.3f} {best_render:>9.3f} {len(files):>6} "
            f"{1000 * (best_parse + best_render) / n:>8.2f}"
        )
    if args.e2e_nodes:
        end_to_end(args.e2e_nodes, args.e2e_repeat, args.dir)


def _cloudctl(*argv: str, cwd: Path) -> float:
    # as installed by `pip install .`: with compiled bytecode (pip compiles at install), even
    # where the environment sets PYTHONDONTWRITEBYTECODE for a source checkout
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "cloudctl", *argv], cwd=cwd, check=True, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - t


def end_to_end(nodes: int, repeat: int, where: str | None = None) -> None:
    """Fresh-process `cloudctl render` of a synthetic rack: into an empty directory, and again
    with nothing changed (the second writes nothing). File creation cost depends on the
    filesystem and on what else creates files there: compare directories with --dir."""
    with tempfile.TemporaryDirectory(prefix="cloudctl-bench-", dir=where) as tmp:
        work = Path(tmp)
        inventory = work / "inventory.yaml"
        inventory.write_text(yaml.safe_dump(synthetic_inventory(nodes), sort_keys=False))
        argv = ("render", "-i", "inventory.yaml", "-o", "out")
        _cloudctl(*argv, cwd=work)  # generates the secrets bundle once
        _cloudctl("--version", cwd=work)  # warm the page cache
        version = [_cloudctl("--version", cwd=work) for _ in range(repeat)]
        empty, rerun = [], []
        for i in range(repeat):
            # each empty-directory render into a name that never existed, the last tree
            # deleted and synced before: file creation right after a mass deletion measures
            # the disk (this machine's ext4 is mounted with online discard, and creating the
            # 1,034 files just after deleting the previous tree takes 0.3-0.6 s longer)
            shutil.rmtree(work / "out")
            os.sync()
            time.sleep(0.5)
            fresh = ("render", "-i", "inventory.yaml", "-o", f"out-{i}")
            empty.append(_cloudctl(*fresh, cwd=work))
            os.rename(work / f"out-{i}", work / "out")
            rerun.append(_cloudctl(*argv, cwd=work))
        files = sum(1 for p in (work / "out").rglob("*") if p.is_file())
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    place = where or tempfile.gettempdir()
    print(f"\nend to end, fresh process, {nodes} nodes, {files} files, in {place} "
          f"(load average {load}):")
    print(f"{'':>26} {'best s':>7} {'median s':>9}")
    for name, times in (
        ("cloudctl --version", version),
        ("render into empty dir", empty),
        ("render, nothing changed", rerun),
    ):
        print(f"{name:>26} {min(times):>7.3f} {statistics.median(times):>9.3f}")


if __name__ == "__main__":
    main()
