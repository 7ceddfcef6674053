"""A parser for the subset of the protobuf language the Kubernetes ``generated.proto`` files use.

``syntax``, ``package``, ``import`` and ``option`` statements; messages (nested too) of fields
``[optional|repeated|required] <type> <name> = <number> [options];``, ``map<K, V> <name> =
<number>;`` and ``oneof`` groups (their fields are the message's on the wire); ``enum`` blocks
are read and kept as int32. Comments are dropped. Type names are
resolved as protoc resolves them (innermost scope outwards, a leading ``.`` is absolute), so each
:class:`Field` of the result names its message type by full name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["SCALARS", "Field", "Message", "ProtoError", "parse_files"]

SCALARS = frozenset({
    "double", "float", "int32", "int64", "uint32", "uint64", "sint32", "sint64", "fixed32",
    "fixed64", "sfixed32", "sfixed64", "bool", "string", "bytes",
})


class ProtoError(ValueError):
    """A .proto file outside the supported subset, or a type that does not resolve."""


@dataclass
class Field:
    name: str
    number: int
    type: str  # a scalar name, or the full name of a message (no leading dot)
    repeated: bool = False
    map_key: str | None = None  # map<K, V>: key scalar; ``type`` is V


@dataclass
class Message:
    full_name: str
    fields: list[Field] = field(default_factory=list)
    by_number: dict[int, Field] = field(default_factory=dict)
    by_name: dict[str, Field] = field(default_factory=dict)


_TOKEN = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*")|([A-Za-z_.][\w.]*)|(-?\d+)|(.))', re.S)


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def _tokens(text: str) -> list[str]:
    out = []
    for m in _TOKEN.finditer(_strip_comments(text)):
        tok = next((g for g in m.groups() if g is not None), None)
        if tok is not None and tok.strip():
            out.append(tok)
    return out


class _Parser:
    def __init__(self, tokens: list[str]) -> None:
        self.toks = tokens
        self.i = 0
        self.package = ""
        # (scope, raw type) of each field, resolved once every file is read
        self.pending: list[tuple[str, Field, str]] = []
        self.messages: dict[str, Message] = {}
        self.enums: set[str] = set()

    def peek(self) -> str:
        return self.toks[self.i] if self.i < len(self.toks) else ""

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if expected is not None and tok != expected:
            raise ProtoError(f"expected {expected!r}, found {tok!r} (token {self.i})")
        self.i += 1
        return tok

    def skip_statement(self) -> None:
        depth = 0
        while self.i < len(self.toks):
            tok = self.take()
            if tok == "{":
                depth += 1
            elif tok == "}":
                depth -= 1
                if depth == 0:
                    return
            elif tok == ";" and depth == 0:
                return

    def parse(self) -> None:
        while self.i < len(self.toks):
            tok = self.peek()
            if tok == "package":
                self.take()
                self.package = self.take()
                self.take(";")
            elif tok == "message":
                self.message(self.package)
            elif tok == "enum":
                self.take()
                self.enums.add(f"{self.package}.{self.take()}".lstrip("."))
                self.skip_statement()
            elif tok in ("syntax", "import", "option"):
                self.skip_statement()
            elif tok == ";":
                self.take()
            else:
                raise ProtoError(f"unsupported statement {tok!r}")

    def message(self, scope: str) -> None:
        self.take("message")
        full = f"{scope}.{self.take()}".lstrip(".")
        msg = self.messages[full] = Message(full)
        self.take("{")
        while self.peek() != "}":
            tok = self.peek()
            if tok == "message":
                self.message(full)
            elif tok == "enum":
                self.take()
                self.enums.add(f"{full}.{self.take()}")
                self.skip_statement()
            elif tok in ("option", "reserved", "extensions"):
                self.skip_statement()
            elif tok == ";":
                self.take()
            elif tok == "oneof":  # its fields are fields of the message on the wire
                self.take()
                self.take()
                self.take("{")
                while self.peek() != "}":
                    if self.peek() == "option":
                        self.skip_statement()
                    else:
                        self.field(full, msg)
                self.take("}")
            elif tok in ("extend", "group", "service"):
                raise ProtoError(f"{tok} is outside the supported subset ({full})")
            else:
                self.field(full, msg)
        self.take("}")

    def field(self, scope: str, msg: Message) -> None:
        label = ""
        if self.peek() in ("optional", "repeated", "required"):
            label = self.take()
        map_key = None
        if self.peek() == "map":
            self.take()
            self.take("<")
            map_key = self.take()
            self.take(",")
            raw_type = self.take()
            self.take(">")
        else:
            raw_type = self.take()
        name = self.take()
        self.take("=")
        number = int(self.take())
        if self.peek() == "[":
            while self.take() != "]":
                pass
        self.take(";")
        f = Field(name, number, raw_type, repeated=label == "repeated" or map_key is not None,
                  map_key=map_key)
        msg.fields.append(f)
        msg.by_number[number] = f
        msg.by_name[name] = f
        if raw_type not in SCALARS:
            self.pending.append((scope, f, raw_type))


def _resolve(scope: str, name: str, known: set[str]) -> str | None:
    if name.startswith("."):
        return name[1:] if name[1:] in known else None
    parts = scope.split(".")
    while True:
        candidate = ".".join([*parts, name]) if parts else name
        if candidate in known:
            return candidate
        if not parts:
            return None
        parts.pop()


def parse_files(texts: Iterable[str]) -> dict[str, Message]:
    """Every message of the files by full name (package + nesting), types resolved."""
    messages: dict[str, Message] = {}
    enums: set[str] = set()
    pending: list[tuple[str, Field, str]] = []
    for text in texts:
        p = _Parser(_tokens(text))
        p.parse()
        messages.update(p.messages)
        enums |= p.enums
        pending += p.pending
    known = set(messages) | enums
    for scope, f, raw in pending:
        resolved = _resolve(scope, raw, known)
        if resolved is None:
            raise ProtoError(f"type {raw!r} of field {f.name!r} in {scope} does not resolve")
        f.type = "int32" if resolved in enums else resolved
    return messages
