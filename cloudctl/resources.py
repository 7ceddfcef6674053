"""Access to the project's data directories (templates/, talos/, flux/, helm-values/).

In a checkout they are the top-level directories next to ``cloudctl/``; in an installed wheel
they are shipped as ``cloudctl/_data/<name>/`` (see pyproject.toml). Reading them is the only
I/O the render layer does.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import Any

_DIRS = {
    "templates": ("templates", "templates"),
    "talos": ("talos", "talos"),
    "flux": ("flux", "flux"),
    "helm-values": ("helm-values", "helm_values"),
}


@functools.cache
def data_dir(name: str) -> Path:
    """Directory of the named data tree: 'templates', 'talos', 'flux' or 'helm-values'."""
    checkout_name, package_name = _DIRS[name]
    checkout = Path(__file__).resolve().parent.parent / checkout_name
    if checkout.is_dir() and (checkout.parent / "pyproject.toml").is_file():
        return checkout
    installed = Path(str(resources.files("cloudctl") / "_data" / package_name))
    if installed.is_dir():
        return installed
    raise FileNotFoundError(f"cloudctl data directory {name!r} not found (broken install?)")


def data_path(name: str, relative: str) -> Path:
    return data_dir(name) / relative


def read_bytes(name: str, relative: str) -> bytes:
    return data_path(name, relative).read_bytes()


def read_text(name: str, relative: str) -> str:
    return data_path(name, relative).read_text(encoding="utf-8")


@functools.cache
def vendored_crds(name: str, relative: str) -> tuple[dict[str, Any], ...]:
    """The CustomResourceDefinitions of a vendored data file (parsed once per process, and
    across processes through :mod:`cloudctl.util.yamlcache`). Shared: do not mutate."""
    from .util.yamlcache import load_documents

    return tuple(
        d for d in load_documents(read_text(name, relative))
        if isinstance(d, dict) and d.get("kind") == "CustomResourceDefinition"
    )
