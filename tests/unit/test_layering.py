"""Layering rules (DESIGN.md): rendering, the inventory and the protocol cores are pure.

They never import I/O libraries (asyncio, socket, grpclib, kubernetes, urllib, subprocess); the
effects live in boot/, talos/, kube/, pipeline/, emulate/ and commands/.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "cloudctl"
FORBIDDEN = {
    "asyncio",
    "socket",
    "grpclib",
    "kubernetes",
    "urllib",
    "http",
    "subprocess",
    "ssl",
    "selectors",
    "paramiko",
    "ansible_runner",
}
PURE = [
    *sorted((PKG / "render").rglob("*.py")),
    *sorted((PKG / "inventory").rglob("*.py")),
    PKG / "catalog.py",
    PKG / "talos_schema.py",
    PKG / "contracts.py",
    PKG / "boot" / "dhcp" / "codec.py",
    PKG / "boot" / "dhcp" / "policy.py",
    PKG / "boot" / "dhcp" / "config.py",
    PKG / "boot" / "tftp_proto.py",
    PKG / "boot" / "ipxe.py",
]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    "path", [p for p in PURE if p.exists()], ids=lambda p: str(p.relative_to(PKG))
)
def test_pure_module_does_no_io_imports(path: Path) -> None:
    bad = _imports(path) & FORBIDDEN
    assert not bad, f"{path.relative_to(PKG)} imports {sorted(bad)}"


def test_pure_modules_do_not_import_effect_layers() -> None:
    effect = ("boot.service", "boot.dhcp.transport", "talos.client", "kube", "pipeline", "emulate")
    for path in PURE:
        if not path.exists():
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                mod = node.module
                assert not any(mod.endswith(e) or f"{e}." in mod for e in effect), (
                    f"{path.relative_to(PKG)} imports {mod}"
                )
