"""Talos API path on emulated racks: discover -> apply -> bootstrap (-> kubeconfig). Run by hand:

    python bench/talos.py [--sizes 5,100] [--concurrency 32] [--repeat 1]

Each size starts a fresh rack of emulated nodes (real gRPC, real Ed25519 TLS on loopback, real
rendered machine configs validated by the emulator against the Talos schema) in this process,
so the numbers include the emulator's own CPU time (schema validation, certificate issuing).
Target (issue 4): 100 nodes discover -> apply -> bootstrap well inside 30 s on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from cloudctl.emulate import Rack
from cloudctl.emulate.talos_scenario import cluster_material, scaled_inventory
from cloudctl.talos import ops

EXAMPLE = Path(__file__).resolve().parents[1] / "inventory.example.yaml"


async def one_run(size: int, concurrency: int) -> dict[str, float]:
    t = time.perf_counter()
    m = cluster_material(scaled_inventory(EXAMPLE, size))
    out = {"render": time.perf_counter() - t}
    inv = m.inventory
    with tempfile.TemporaryDirectory() as tmp:
        async with Rack(inv) as rack:
            t0 = t = time.perf_counter()
            found = await ops.discover(inv, (str(h) for h in inv.network.subnet.hosts()),
                                       dial=rack.endpoint, concurrency=max(64, concurrency))
            ops.check_preflight(inv, found)
            out["discover"] = time.perf_counter() - t
            t = time.perf_counter()
            res = await ops.apply_all(inv, found, m.configs, m.credentials, dial=rack.endpoint,
                                      concurrency=concurrency, timeout=120)
            ops.raise_failures(res, "apply")
            out["apply"] = time.perf_counter() - t
            t = time.perf_counter()
            await ops.bootstrap_once(inv, m.credentials,
                                     ops.BootstrapState(Path(tmp) / "bootstrap.json"),
                                     dial=rack.endpoint, timeout=60)
            out["bootstrap"] = time.perf_counter() - t
            out["total"] = time.perf_counter() - t0
            t = time.perf_counter()
            await ops.kubeconfig(inv, m.credentials, dial=rack.endpoint)
            out["kubeconfig"] = time.perf_counter() - t
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="5,100")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    cols = ("render", "discover", "apply", "bootstrap", "total", "kubeconfig")
    print(f"{'nodes':>6} " + " ".join(f"{c + ' s':>12}" for c in cols))
    for size in (int(s) for s in args.sizes.split(",")):
        runs = [asyncio.run(one_run(size, args.concurrency)) for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r["total"])
        print(f"{size:>6} " + " ".join(f"{best[c]:>12.2f}" for c in cols), flush=True)


if __name__ == "__main__":
    main()
