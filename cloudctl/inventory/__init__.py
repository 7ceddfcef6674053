"""Inventory: load, validate (structure, then semantics), and the typed model.

Public surface::

    load_inventory(path) -> LoadedInventory      # raises InventoryError (exit 2)
    parse_inventory(text, source) -> LoadedInventory
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from ..errors import InventoryError, Problem
from ..util.paths import format_path
from .checks import check
from .loader import LineMap, PathKey, line_for, load_yaml_with_lines
from .models import Inventory, Node

__all__ = [
    "Inventory",
    "InventoryError",
    "LoadedInventory",
    "Node",
    "load_inventory",
    "parse_inventory",
]


@dataclass(frozen=True)
class LoadedInventory:
    inventory: Inventory
    warnings: tuple[Problem, ...]
    source: str
    lines: LineMap


_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _parse_path(path: str) -> PathKey:
    out: list[str | int] = []
    for name, idx in _PATH_TOKEN.findall(path):
        out.append(int(idx) if idx else name)
    return tuple(out)


def _pydantic_problems(exc: ValidationError, lines: LineMap, source: str) -> list[Problem]:
    problems: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc: list[str | int] = []
        for part in err["loc"]:
            # pydantic adds union-member / validator tags to loc; keep only real keys
            if isinstance(part, int) or (
                isinstance(part, str)
                and not any(part.startswith(t) for t in ("function-", "function[", "tagged-union"))
                and "[" not in part
            ):
                loc.append(part)
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if err["type"] == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}" if loc else "unknown key"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif "input" in err and err["type"].endswith("_type"):
            msg = f"{msg} (got {type(err['input']).__name__} {err['input']!r})"
        key: PathKey = tuple(loc)
        problems.append(Problem(format_path(key), msg, line_for(lines, key), source))
    # the same location can be reported once per union branch; keep the first
    seen: set[tuple[str, str]] = set()
    unique = []
    for p in problems:
        if (p.path, p.message) not in seen:
            seen.add((p.path, p.message))
            unique.append(p)
    return unique


def parse_inventory(text: str, source: str = "<inventory>") -> LoadedInventory:
    data, lines = load_yaml_with_lines(text, source)
    if data is None:
        raise InventoryError(
            Problem("", "the inventory is empty (expected a mapping with cluster, network, nodes)"),
            source=source,
        )
    if not isinstance(data, dict):
        raise InventoryError(
            Problem("", f"the inventory must be a mapping, not a {type(data).__name__}", 1),
            source=source,
        )
    try:
        inv = Inventory.model_validate(data)
    except ValidationError as exc:
        raise InventoryError(_pydantic_problems(exc, lines, source), source=source) from None
    errors, warnings = check(inv)
    if errors:
        for_lines = [
            Problem(p.path, p.message, line_for(lines, _parse_path(p.path)), source) for p in errors
        ]
        raise InventoryError(for_lines, source=source)
    warns = tuple(
        Problem(p.path, p.message, line_for(lines, _parse_path(p.path)), source) for p in warnings
    )
    return LoadedInventory(inventory=inv, warnings=warns, source=source, lines=lines)


def load_inventory(path: str | Path) -> LoadedInventory:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise InventoryError(Problem("", f"file not found: {p}"), source=str(p)) from None
    except OSError as exc:
        raise InventoryError(Problem("", f"cannot read: {exc.strerror}"), source=str(p)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InventoryError(
            Problem("", f"not UTF-8 text (byte {exc.start})"), source=str(p)
        ) from None
    return parse_inventory(text, str(p))
