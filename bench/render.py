"""Render throughput: 10 / 100 / 1,000 nodes (PKI generated once). Run by hand:

    python bench/render.py [--sizes 10,100,1000] [--repeat 3] [--e2e-nodes 1000]

Prints wall time per size (best of N) and the per-node cost, so growth can be judged linear.
Target (issue 2): 1,000 nodes in <= 2 s on a 2-core machine.

Then the end-to-end figure (issue 14): a fresh ``cloudctl render -i inventory.yaml -o out``
process (parse, check, secrets, render, write, swap), timed into an empty directory and as a
no-change rerun, best and median of N, with the load average (other work on the machine
shows there), and into an empty directory right after a tree was deleted (see
``end_to_end``). Target: 1,000 nodes under 1 s.
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
        [sys.executable, "-m", "cloudctl", *argv],
        cwd=cwd,
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - t


def end_to_end(nodes: int, repeat: int, where: str | None = None) -> None:
    """Fresh-process `cloudctl render` of a synthetic rack: into an empty directory, again
    with nothing changed (the second writes nothing), and into an empty directory right after
    a tree of the same size was deleted.

    The last is a property of the filesystem more than of cloudctl. On this build machine's
    root filesystem (ext4 without a journal) file creation was measured at 0.3-0.6 ms per
    file instead of 20 us for up to about 30 s after a mass deletion, in some directories: the
    kernel skips inodes freed less than ``dirty_expire_centisecs`` ago and, where many were,
    scans past each of them on every creation. The plain empty-directory runs therefore render
    into names that never existed with nothing deleted since the bench's set-up; the last row
    shows the other case (slow or not depending on where the kernel puts the new tree)."""
    with tempfile.TemporaryDirectory(prefix="cloudctl-bench-", dir=where) as tmp:
        work = Path(tmp)
        inventory = work / "inventory.yaml"
        inventory.write_text(yaml.safe_dump(synthetic_inventory(nodes), sort_keys=False))
        argv = ("render", "-i", "inventory.yaml", "-o", "out")
        _cloudctl(*argv, cwd=work)  # generates the secrets bundle once
        _cloudctl("--version", cwd=work)  # warm the page cache
        version = [_cloudctl("--version", cwd=work) for _ in range(repeat)]
        empty = []
        for i in range(repeat):
            os.sync()
            time.sleep(0.5)
            empty.append(_cloudctl("render", "-i", "inventory.yaml", "-o", f"new-{i}", cwd=work))
        rerun = [_cloudctl(*argv, cwd=work) for _ in range(repeat)]
        after_delete = []
        for i in range(repeat):
            shutil.rmtree(work / f"new-{i}")
            os.sync()
            time.sleep(0.5)
            after_delete.append(
                _cloudctl("render", "-i", "inventory.yaml", "-o", f"again-{i}", cwd=work)
            )
        files = sum(1 for p in (work / "out").rglob("*") if p.is_file())
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    place = where or tempfile.gettempdir()
    print(
        f"\nend to end, fresh process, {nodes} nodes, {files} files, in {place} "
        f"(load average {load}):"
    )
    print(f"{'':>38} {'best s':>7} {'median s':>9}")
    for name, times in (
        ("cloudctl --version", version),
        ("render into empty dir", empty),
        ("render, nothing changed", rerun),
        ("render into empty dir after a delete", after_delete),
    ):
        print(f"{name:>38} {min(times):>7.3f} {statistics.median(times):>9.3f}")


if __name__ == "__main__":
    main()
