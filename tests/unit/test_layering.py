"""Layering rules (DESIGN.md): rendering, the inventory and the protocol cores are pure.

They never import I/O libraries (asyncio, socket, grpclib, kubernetes, urllib, subprocess); the
effects live in boot/, talos/, kube/, pipeline/, emulate/ and commands/. The sans-IO protocol
cores (DHCP codec and policy, TFTP, HTTP, the malformed-packet errors, iPXE scripts) are held
to more: no clock (time), no files or processes (os, io, shutil...), no sockets or event loops
(socket, select, asyncio), and they never reach a transport, even through other modules.

Every listed file must exist: a renamed or moved module fails here instead of silently dropping
out of the check.
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
CORE_FORBIDDEN = FORBIDDEN | {
    "time",
    "os",
    "select",
    "io",
    "shutil",
    "tempfile",
    "mmap",
    "fcntl",
    "signal",
    "threading",
    "concurrent",
    "multiprocessing",
}
PURE_TREES = [PKG / "render", PKG / "inventory"]
PURE = [
    *sorted(p for tree in PURE_TREES for p in tree.rglob("*.py")),
    PKG / "catalog.py",
    PKG / "talos_schema.py",
    PKG / "contracts.py",
    PKG / "pipeline" / "plan.py",
    PKG / "rack" / "learned.py",
    PKG / "ansible" / "inventory.py",
    PKG / "ansible" / "events.py",
]
SANS_IO_CORES = [
    PKG / "boot" / "malformed.py",
    PKG / "boot" / "dhcp" / "codec.py",
    PKG / "boot" / "dhcp" / "policy.py",
    PKG / "boot" / "dhcp" / "config.py",
    PKG / "boot" / "tftp_proto.py",
    PKG / "boot" / "http_proto.py",
    PKG / "boot" / "ndp_proto.py",
    PKG / "boot" / "ipxe.py",
]
EFFECT_MODULES = (
    "cloudctl.boot.service",
    "cloudctl.boot.http",
    "cloudctl.boot.tftp",
    "cloudctl.boot.mmsg",
    "cloudctl.boot.files",
    "cloudctl.boot.assets",
    "cloudctl.boot.dhcp.transport",
    "cloudctl.boot.dhcp.probe",
    "cloudctl.boot.ndp",
    "cloudctl.talos.client",
    "cloudctl.kube",
    "cloudctl.pipeline",
    "cloudctl.emulate",
    "cloudctl.commands",
)


def _rel(path: Path) -> str:
    return str(path.relative_to(PKG))


def _module_name(path: Path) -> str:
    parts = ["cloudctl", *path.relative_to(PKG).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_nodes(path: Path) -> list[ast.Import | ast.ImportFrom]:
    tree = ast.parse(path.read_text(), str(path))
    return [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]


def _imports(path: Path) -> set[str]:
    """Top-level names of the absolute imports of a file."""
    names: set[str] = set()
    for node in _import_nodes(path):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _cloudctl_imports(path: Path) -> set[str]:
    """Dotted names of the cloudctl modules a file imports (relative imports resolved; for
    ``from pkg import name`` both ``pkg`` and ``pkg.name``, which may be a module)."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    out: set[str] = set()
    for node in _import_nodes(path):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "cloudctl")
            continue
        if node.level:
            base = package[: len(package) - (node.level - 1)]
            mod = ".".join([*base, node.module] if node.module else base)
        else:
            mod = node.module or ""
        if mod.split(".")[0] != "cloudctl":
            continue
        out.add(mod)
        out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def _file_of(module: str) -> Path | None:
    rel = Path(*module.split(".")[1:])
    for candidate in (PKG / rel.with_suffix(".py"), PKG / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _reachable(path: Path) -> dict[str, str]:
    """Every cloudctl module ``path`` imports, directly or through others: name -> importer.
    (Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` too.)"""
    seen: dict[str, str] = {}
    todo = [(path, _module_name(path))]
    while todo:
        file, name = todo.pop()
        for mod in sorted(_cloudctl_imports(file)):
            parts = mod.split(".")
            for i in range(2, len(parts) + 1):
                sub = ".".join(parts[:i])
                target = _file_of(sub)
                if sub in seen or target is None:
                    continue
                seen[sub] = name
                todo.append((target, sub))
    return seen


def test_listed_modules_exist() -> None:
    missing = [_rel(p) for p in [*PURE, *SANS_IO_CORES] if not p.is_file()]
    assert not missing, f"layering lists modules that do not exist: {missing}"
    empty = [_rel(t) for t in PURE_TREES if not any(t.rglob("*.py"))]
    assert not empty, f"no modules under {empty}"


@pytest.mark.parametrize("path", PURE, ids=_rel)
def test_pure_module_does_no_io_imports(path: Path) -> None:
    assert path.is_file(), f"{_rel(path)} is listed as pure but does not exist"
    bad = _imports(path) & FORBIDDEN
    assert not bad, f"{_rel(path)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", SANS_IO_CORES, ids=_rel)
def test_sans_io_core_imports_no_clock_files_or_sockets(path: Path) -> None:
    assert path.is_file(), f"{_rel(path)} is listed as a sans-IO core but does not exist"
    bad = _imports(path) & CORE_FORBIDDEN
    assert not bad, f"{_rel(path)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", [*PURE, *SANS_IO_CORES], ids=_rel)
def test_pure_modules_do_not_reach_effect_layers(path: Path) -> None:
    assert path.is_file(), f"{_rel(path)} does not exist"
    reached = _reachable(path)
    bad = {
        mod: via
        for mod, via in reached.items()
        if any(mod == e or mod.startswith(e + ".") for e in EFFECT_MODULES)
    }
    assert not bad, f"{_rel(path)} reaches {', '.join(f'{m} (via {v})' for m, v in bad.items())}"


def test_checker_sees_relative_and_indirect_imports() -> None:
    """The import resolution the checks rely on: relative imports of the boot package and a
    transport reached through another module are both found."""
    reached = _reachable(PKG / "boot" / "http.py")
    assert reached["cloudctl.boot.files"] == "cloudctl.boot.http"
    assert reached["cloudctl.boot.http_proto"] == "cloudctl.boot.http"
    assert reached["cloudctl.boot.malformed"] in ("cloudctl.boot.http", "cloudctl.boot.http_proto")
    assert "cloudctl.boot.tftp_proto" in _reachable(PKG / "boot" / "http_proto.py")
    assert {"os", "select", "asyncio", "time"} <= _imports(PKG / "boot" / "http.py")


def test_every_source_directory_is_a_package() -> None:
    """setup.py's find_packages only ships directories with an __init__.py: a module directory
    without one would be missing from a non-editable install (cloudctl/ssh once was)."""
    missing = sorted(_rel(d) for d in PKG.rglob("*") if d.is_dir() and "__pycache__" not in
                     d.parts and any(d.glob("*.py")) and not (d / "__init__.py").is_file())
    assert missing == []
