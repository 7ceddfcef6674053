"""The render layer's output type and deterministic serialisers.

A renderer is a pure function returning ``Files``: a map from a POSIX path relative to the
output directory to a ``RenderedFile``. Files marked ``secret`` are written with mode 0600 and
their content is never shown by ``--plan``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..util.yamlcache import cached_dump


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


# --------------------------------------------------------------------------- fast path
#
# Most documents are mappings, lists and short one-line strings, ints and booleans. For those,
# ``_fast_dump`` writes the bytes libyaml's emitter writes (block style, 2-space indent,
# sequences not indented inside mappings) without building YAML nodes and events; anything
# else (a string that libyaml would quote or fold, a multi-line string, a float, a non-string
# key, a list in a list, non-ASCII text) makes it return None and the document goes through
# ``_dump``. tests/unit/test_render_yaml.py compares both on every rendered document and on
# generated ones.


class _NotPlain(Exception):
    pass


_RESOLVER = yaml.resolver.Resolver()
_STR_TAG = "tag:yaml.org,2002:str"
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
# what may start a plain scalar: not an indicator, a space or a quote
_PLAIN_START = re.compile(r"[A-Za-z0-9_./(=$~^<;\\)+]")
_MAX_SCALAR = 1024  # with spaces: far below the 4096-column width, never folded


@functools.lru_cache(maxsize=65536)
def _str_text(value: str) -> str | None:
    """How libyaml writes this string in block context (as a value and as a simple key), or
    None where the fast path does not know.

    Only printable ASCII without leading/trailing spaces. A string the resolver would read
    back as something else (``off``, ``1000``, ``null``, ``''``) cannot be plain: libyaml
    single-quotes it (``'`` doubled). A string that reads back as a string is plain when its
    first character is no indicator, nothing inside starts a value (": ") or a comment
    (" #") and it does not end in ":"; any other string is left to libyaml."""
    if (
        (len(value) > _MAX_SCALAR and " " in value)  # libyaml folds only at spaces
        or _PRINTABLE.fullmatch(value) is None
        or value[:1] == " "
        or value[-1:] == " "
    ):
        return None
    if _RESOLVER.resolve(yaml.ScalarNode, value, (True, False)) != _STR_TAG:
        return "'" + value.replace("'", "''") + "'"
    if (
        (
            _PLAIN_START.match(value) is not None
            or (value[0] == "-" and value[1:2] not in ("", " ") and value[:3] != "---")
        )
        and not value.endswith(":")
        and ": " not in value
        and " #" not in value
        and not value.startswith("...")
    ):
        return value
    return None


_BLOCK_TEXT = re.compile(r"[\x20-\x7e\n]*")


def _literal_text(value: str, indent: str) -> str:
    """A multi-line string as ``_str_representer`` asks for it, a ``|`` block, lines indented
    two more than ``indent``; what libyaml writes when no line needs an indentation hint (no
    leading space or break) and the block is allowed (printable ASCII and line breaks only, no
    space before a break or at the end). More than one trailing break ('|+') is left to
    libyaml."""
    if (
        _BLOCK_TEXT.fullmatch(value) is None
        or value[0] in " \n"
        or value.endswith((" ", "\n\n"))
        or " \n" in value
    ):
        raise _NotPlain
    body = value[:-1] if value.endswith("\n") else value
    pad = indent + "  "
    lines = "".join(f"{pad}{line}\n" if line else "\n" for line in body.split("\n"))
    return ("|\n" if body is not value else "|-\n") + lines


def _scalar_text(value: Any, indent: str = "") -> str:
    """The text after ``key: `` or ``- `` (a ``|`` block ends with its own line break)."""
    t = type(value)
    if t is str:
        text = _str_text(value)
        if text is None:
            if "\n" in value:
                return _literal_text(value, indent)
            raise _NotPlain
        return text
    if t is bool:
        return "true" if value else "false"
    if t is int:
        return str(value)
    if value is None:
        return "null"
    raise _NotPlain


def _fast_mapping(d: dict[Any, Any], indent: str, out: list[str]) -> None:
    for key, value in d.items():
        if type(key) is not str or len(key) >= 100:  # libyaml: simple keys up to 128
            raise _NotPlain
        key = _str_text(key)
        if key is None:
            raise _NotPlain
        t = type(value)
        if t is dict:
            if value:
                out.append(f"{indent}{key}:\n")
                _fast_mapping(value, indent + "  ", out)
            else:
                out.append(f"{indent}{key}: {{}}\n")
        elif t is list:
            if value:
                out.append(f"{indent}{key}:\n")
                _fast_sequence(value, indent, out)
            else:
                out.append(f"{indent}{key}: []\n")
        else:
            text = _scalar_text(value, indent)
            out.append(f"{indent}{key}: {text}" if text[-1] == "\n" else f"{indent}{key}: {text}\n")


def _fast_sequence(items: list[Any], indent: str, out: list[str]) -> None:
    for item in items:
        t = type(item)
        if t is dict:
            if item:
                start = len(out)
                _fast_mapping(item, indent + "  ", out)
                out[start] = f"{indent}- " + out[start][len(indent) + 2 :]
            else:
                out.append(f"{indent}- {{}}\n")
        elif t is list:
            raise _NotPlain
        else:
            text = _scalar_text(item, indent)
            out.append(f"{indent}- {text}" if text[-1] == "\n" else f"{indent}- {text}\n")


def _fast_dump(obj: Any) -> str | None:
    if type(obj) is not dict or not obj:
        return None
    out: list[str] = []
    try:
        _fast_mapping(obj, "", out)
    except (_NotPlain, RecursionError):
        return None
    return "".join(out)


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
        hit = _YAML_CACHE[key] = cached_dump(key, _dumper_id(), lambda: _dump_any(obj))
    return hit


def _dump_any(obj: Any) -> str:
    fast = _fast_dump(obj)
    return fast if fast is not None else _dump(obj)


@functools.cache
def _dumper_id() -> str:
    """What the YAML text depends on besides the document: this module's code and PyYAML's
    version (the key of ``cached_dump``'s entries for large documents)."""
    source = Path(__file__).read_bytes()
    return f"pyyaml {yaml.__version__} {hashlib.sha256(source).hexdigest()}"


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


def kustomization(resources: list[str]) -> dict[str, Any]:
    """A plain kustomize ``Kustomization`` listing ``resources`` (files or directories)."""
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
    }
