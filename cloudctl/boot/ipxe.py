"""Per-MAC iPXE scripts rendered from ``templates/ipxe/`` (pure: inventory in, text out).

A known node gets a script that fetches the kernel and initramfs from its per-MAC HTTP URLs and
boots Talos with the node's kernel arguments; each step retries a few times with a delay. By
default no ``talos.config=`` is given, so Talos boots into maintenance mode and cloudctl applies
the machine config over the Talos API. A machine not in the inventory gets a script that says so
and exits (never a Talos boot).
"""

from __future__ import annotations

import functools
import re

import jinja2

from ..errors import InputError, Problem
from ..inventory.models import Inventory, Node
from ..resources import data_path

ATTEMPTS = 3
RETRY_DELAY = 5
"""Seconds between attempts."""

_CONSOLE = {"amd64": "console=ttyS0", "arm64": "console=ttyAMA0"}
# Characters that would change the meaning of an iPXE command line: whitespace splits arguments
# (or starts a new command on newline), '$' expands iPXE settings, quotes/backslash are parsed by
# iPXE's tokenizer, '||'/'&&' chain commands.
_UNSAFE_ARG = re.compile(r"[\s$\"'\\&|#]|[\x00-\x1f\x7f]")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_URL = re.compile(r"^https?://[^\s$\"'\\]+$")


@functools.cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_path("templates", "ipxe"))),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _mac_path(mac: str) -> str:
    return mac.lower().replace(":", "-")


def _node_index(inv: Inventory, node: Node) -> int:
    for i, n in enumerate(inv.nodes):
        if n.name == node.name:
            return i
    return -1


def kernel_args(inv: Inventory, node: Node) -> list[str]:
    """Kernel command line for the node's network boot, without ``initrd=`` and config URL.

    Talos' required metal arguments (reference pxe.md §5), the console for the image's
    architecture, then the inventory's ``image.extraKernelArgs`` and the node's ``kernelArgs``.
    Exact duplicates are dropped (first occurrence kept).
    """
    args = [
        "talos.platform=metal",
        "console=tty0",
        _CONSOLE[inv.image.arch],
        "slab_nomerge",
        "pti=on",
        "init_on_alloc=1",
        "printk.devkmsg=on",
    ]
    problems: list[Problem] = []
    idx = _node_index(inv, node)
    for where, extra in (
        ("image.extraKernelArgs", inv.image.extra_kernel_args),
        (f"nodes[{idx}].kernelArgs", node.kernel_args),
    ):
        for i, arg in enumerate(extra):
            if _UNSAFE_ARG.search(arg):
                problems.append(
                    Problem(
                        f"{where}[{i}]",
                        f"{arg!r}: kernel arguments for network boot may not contain "
                        "whitespace, control characters or any of $ \" ' \\ & | #",
                    )
                )
            args.append(arg)
    if problems:
        raise InputError(problems)
    seen: set[str] = set()
    unique: list[str] = []
    for a in args:
        if a not in seen:
            seen.add(a)
            unique.append(a)
    return unique


def node_script(inv: Inventory, node: Node, *, base_url: str, config_url: str | None = None) -> str:
    """The iPXE script for ``node`` booting from its first MAC.

    ``base_url`` is the boot HTTP server (``http://10.20.0.2:8080``); ``config_url`` (opt-in)
    adds ``talos.config=<url>`` so Talos fetches its config once instead of waiting in
    maintenance mode.
    """
    base = base_url.rstrip("/")
    if not _URL.match(base):
        raise InputError(Problem("base_url", f"{base_url!r} is not an http(s) URL usable by iPXE"))
    args = kernel_args(inv, node)
    if config_url is not None:
        if not _URL.match(config_url):
            raise InputError(
                Problem("config_url", f"{config_url!r} is not an http(s) URL usable by iPXE")
            )
        args.append(f"talos.config={config_url}")
    mac = node.primary_mac
    return (
        _env()
        .get_template("node.ipxe.j2")
        .render(
            node_name=node.name,
            mac=mac,
            talos_version=inv.cluster.talos_version,
            arch=inv.image.arch,
            kernel_url=f"{base}/boot/{_mac_path(mac)}/kernel",
            initrd_url=f"{base}/boot/{_mac_path(mac)}/initramfs.xz",
            args=" ".join(args),
            config_url=config_url,
            attempts=ATTEMPTS,
            delay=RETRY_DELAY,
        )
    )


def unknown_script(mac: str) -> str:
    """Script for a MAC that is not in the inventory: print a message and exit."""
    norm = mac.lower().replace("-", ":")
    if not _MAC.match(norm):
        norm = "this machine"
    return _env().get_template("unknown.ipxe.j2").render(mac=norm, delay=RETRY_DELAY)


def scripts_by_mac(
    inv: Inventory, *, base_url: str, config_urls: dict[str, str] | None = None
) -> dict[str, bytes]:
    """Every inventory MAC ('aa:bb:..' form) -> its node's script (for ``HttpServer.scripts``).

    Each of a node's MACs gets the node's script, so a node that PXE-boots from its second NIC
    is still recognised. ``config_urls`` maps node name -> one-shot config URL (opt-in).
    """
    out: dict[str, bytes] = {}
    for node in inv.nodes:
        url = (config_urls or {}).get(node.name)
        script = node_script(inv, node, base_url=base_url, config_url=url).encode("utf-8")
        for mac in node.macs:
            out[mac] = script
    return out
