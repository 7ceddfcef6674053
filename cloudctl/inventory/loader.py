"""YAML loading that remembers where every value came from.

``load_yaml_with_lines`` returns plain Python data plus a map from field path (a tuple of keys
and list indexes) to the 1-based line the value starts on, so that validation errors can name
both the path and the line.
"""

from __future__ import annotations

from typing import Any

import yaml

from ..errors import InventoryError, Problem
from ..util.paths import format_path
from ..util.yamlcache import SAFE_LOADER

PathKey = tuple[str | int, ...]
LineMap = dict[PathKey, int]




class _SafeNoDupLoader(SAFE_LOADER):  # type: ignore[valid-type,misc]
    """Safe loader (libyaml when available); duplicate keys are rejected by ``_construct``."""


def _construct(node: yaml.Node, loader: yaml.SafeLoader, path: PathKey, lines: LineMap) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_object(node, deep=True)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise InventoryError(
                    Problem(
                        format_path(path),
                        "mapping keys must be scalars",
                        key_node.start_mark.line + 1,
                    )
                )
            if key in out:
                raise InventoryError(
                    Problem(
                        format_path((*path, str(key))),
                        "duplicate key",
                        key_node.start_mark.line + 1,
                    )
                )
            skey = key if isinstance(key, str) else str(key)
            out[skey] = _construct(value_node, loader, (*path, skey), lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, loader, (*path, i), lines) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def load_yaml_with_lines(text: str, source: str = "<inventory>") -> tuple[Any, LineMap]:
    """Parse one YAML document; return (data, line map). Raise InventoryError on bad YAML."""
    lines: LineMap = {}
    loader = _SafeNoDupLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, lines
        data = _construct(node, loader, (), lines)
    except InventoryError as exc:
        exc.source = source
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = exc.problem or str(exc)
        raise InventoryError(Problem("", f"malformed YAML: {what}", line), source=source) from exc
    except yaml.YAMLError as exc:
        raise InventoryError(Problem("", f"malformed YAML: {exc}"), source=source) from exc
    finally:
        loader.dispose()
    return data, lines


def line_for(lines: LineMap, path: PathKey) -> int | None:
    """Line of ``path`` or of its nearest ancestor present in the map."""
    p = tuple(path)
    while True:
        if p in lines:
            return lines[p]
        if not p:
            return None
        p = p[:-1]
