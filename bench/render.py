"""Render throughput: 10 / 100 / 1,000 nodes (PKI generated once). Run by hand:

    python bench/render.py [--sizes 10,100,1000] [--repeat 3]

Prints wall time per size (best of N) and the per-node cost, so growth can be judged linear.
Target (issue 2): 1,000 nodes in <= 2 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import time

import yaml

from cloudctl.inventory import parse_inventory
from cloudctl.inventory.synthetic import synthetic_inventory
from cloudctl.render import render_all
from cloudctl.secrets import generate_bundle


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--repeat", type=int, default=3)
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


if __name__ == "__main__":
    main()
