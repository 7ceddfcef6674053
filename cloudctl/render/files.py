"""The render layer's output type and deterministic serialisers.

A renderer is a pure function returning ``Files``: a map from a POSIX path relative to the
output directory to a ``RenderedFile``. Files marked ``secret`` are written with mode 0600 and
their content is never shown by ``--plan``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml


@dataclass(frozen=True)
class RenderedFile:
    data: bytes
    secret: bool = False


Files = dict[str, RenderedFile]


# libyaml's emitter when available (about 10x faster than the pure-Python one; renders of
# 1,000 nodes depend on it). Its block sequences inside mappings are not indented ("key:\n- a"),
# and the pure-Python fallback is configured to emit exactly the same bytes.
_BaseDumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Dumper(_BaseDumper):  # type: ignore[valid-type,misc]
    """Block-style YAML, keys in insertion order, no aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str_representer)


def _dump(obj: Any) -> str:
    return yaml.dump(
        obj,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=4096,
    )


_YAML_CACHE: dict[str, str] = {}
_YAML_CACHE_MAX = 4096


def to_yaml(obj: Any) -> str:
    """Deterministic YAML of one document (insertion-ordered keys, block style).

    Identical documents repeat across a rack (every worker's v1alpha1 document, resolver and
    registry documents), so the text is cached by the document's JSON form (key order kept)."""
    try:
        key = json.dumps(obj, ensure_ascii=False)
    except (TypeError, ValueError):
        return _dump(obj)
    hit = _YAML_CACHE.get(key)
    if hit is None:
        if len(_YAML_CACHE) >= _YAML_CACHE_MAX:
            _YAML_CACHE.clear()
        hit = _YAML_CACHE[key] = _dump(obj)
    return hit


def to_yaml_docs(docs: Iterable[Any]) -> str:
    """Several YAML documents separated by '---'."""
    return "---\n".join(to_yaml(d) for d in docs)


def text_file(content: str, *, secret: bool = False) -> RenderedFile:
    return RenderedFile(content.encode("utf-8"), secret=secret)


def yaml_file(obj: Any, *, secret: bool = False, header: str | None = None) -> RenderedFile:
    body = to_yaml(obj)
    if header:
        body = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines()) + body
    return text_file(body, secret=secret)


def yaml_docs_file(
    docs: Iterable[Any], *, secret: bool = False, header: str | None = None
) -> RenderedFile:
    body = to_yaml_docs(docs)
    if header:
        body = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines()) + body
    return text_file(body, secret=secret)
