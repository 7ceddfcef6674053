"""The render layer's output type and deterministic serialisers.

A renderer is a pure function returning ``Files``: a map from a POSIX path relative to the
output directory to a ``RenderedFile``. Files marked ``secret`` are written with mode 0600 and
their content is never shown by ``--plan``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml


@dataclass(frozen=True)
class RenderedFile:
    data: bytes
    secret: bool = False


Files = dict[str, RenderedFile]


class _Dumper(yaml.SafeDumper):
    """Block-style YAML, keys in insertion order, no aliases, sequences indented under keys."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str_representer)


def to_yaml(obj: Any) -> str:
    """Deterministic YAML of one document (insertion-ordered keys, block style)."""
    return yaml.dump(
        obj,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=4096,
    )


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
