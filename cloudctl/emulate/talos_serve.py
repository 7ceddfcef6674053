"""Serve emulated Talos nodes for an inventory until interrupted.

    python -m cloudctl.emulate.talos_serve -i inventory.yaml [--port 50000] [--kube-api-url URL]

Prints one line per node: name, node address, the loopback socket it is served on, MACs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from ..inventory import load_inventory
from .talos_rack import Rack


async def serve(inventory: str, port: int, kube_api_url: str | None) -> None:
    inv = load_inventory(inventory).inventory
    async with Rack(inv, port=port, kube_api_url=kube_api_url) as rack:
        for n in rack.nodes.values():
            print(f"{n.name}\t{n.dhcp_address}\t{rack.socket_host(n.dhcp_address)}:{rack.port}\t"
                  f"{','.join(n.macs)}", flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run emulated Talos nodes for an inventory.")
    p.add_argument("-i", "--inventory", required=True)
    p.add_argument("--port", type=int, default=50000)
    p.add_argument("--kube-api-url", default=None)
    args = p.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.inventory, args.port, args.kube_api_url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
