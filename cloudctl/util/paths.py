"""Field paths as error messages name them: ``nodes[0].macs``, ``spec.values.ports[0].name``."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["format_path"]


def format_path(parts: Iterable[str | int]) -> str:
    """``["spec", "values", "ports", 0, "name"]`` -> ``spec.values.ports[0].name``.

    Integers are list indexes; every other part is a key (converted with ``str``). An empty
    path gives ``""``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
