"""CRD validation rules (``x-kubernetes-validations``) evaluated as kube-apiserver does, with
the CEL implementation ``cel-python`` (``celpy``).

For every schema node that carries rules and whose value is present, each rule runs with
``self`` bound to the value (after the schema's ``default`` values are applied, as the server
defaults before it validates) and, on an update, ``oldSelf`` bound to the old value at the same
path (object properties and map keys correlate; list items do not). A transition rule (one
that names ``oldSelf``) runs only when an old value exists, unless ``optionalOldSelf`` is set
(then ``oldSelf`` is absent rather than skipped: such rules run with ``oldSelf`` null).

A rule that does not hold is reported as the server reports it: the field path of the node
(``fieldPath`` appended; the root is ``<nil>``), ``reason`` (FieldValueInvalid by default,
``Invalid value: "<schema type>": <message>``; Required, Forbidden, Duplicate), the message
from ``messageExpression`` when it yields a non-empty single-line string, else ``message``,
else ``failed rule: <rule>``. An evaluation error (a missing key) is ``<error> evaluating rule:
<message or rule>``.

What the library cannot do is skipped, never guessed: a rule that does not parse, or that calls
a Kubernetes CEL extension celpy lacks (``isURL``, ``quantity``, ``lowerAscii`` ...), is logged
once and not enforced. Compiled programs are cached per rule text, and the rule-bearing paths of
a schema are found once per CRD version (:class:`RuleSet`).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RuleProblem", "RuleSet", "rule_set"]

log = logging.getLogger(__name__)

_OLD_SELF = re.compile(r"\boldSelf\b")
_REASONS = {
    "FieldValueInvalid": "Invalid value",
    "FieldValueRequired": "Required value",
    "FieldValueForbidden": "Forbidden",
    "FieldValueDuplicate": "Duplicate value",
}
_skipped: set[str] = set()


@dataclass(frozen=True)
class RuleProblem:
    """One failed rule: field path, Status cause reason and the field error's text (what
    follows ``<path>: `` in the server's message)."""

    path: str
    reason: str
    detail: str


@functools.cache
def _environment() -> Any:
    import celpy

    return celpy.Environment()


def _skip_once(rule: str, why: str) -> None:
    if rule not in _skipped:
        _skipped.add(rule)
        log.warning("CRD validation rule not enforced (%s): %s", why, rule)


@functools.cache
def _program(rule: str) -> Any | None:
    """The compiled program of a rule (None: celpy cannot parse it; logged once)."""
    env = _environment()
    try:
        return env.program(env.compile(rule))
    except Exception as exc:  # celpy raises its own parse errors and lark's
        _skip_once(rule, f"does not compile: {str(exc).splitlines()[0]}")
        return None


def _to_cel(value: Any) -> Any:
    import celpy

    return celpy.json_to_cel(value)


@dataclass
class _Node:
    schema: Mapping[str, Any]
    rules: list[Mapping[str, Any]] = field(default_factory=list)
    properties: dict[str, _Node] = field(default_factory=dict)
    items: _Node | None = None
    additional: _Node | None = None


def _build(schema: Mapping[str, Any]) -> _Node | None:
    """The schema's nodes on a path to a rule (None: no rule below)."""
    node = _Node(schema, [r for r in schema.get("x-kubernetes-validations") or []
                          if isinstance(r, Mapping) and isinstance(r.get("rule"), str)])
    for key, sub in (schema.get("properties") or {}).items():
        if isinstance(sub, Mapping) and (child := _build(sub)) is not None:
            node.properties[key] = child
    items = schema.get("items")
    if isinstance(items, Mapping):
        node.items = _build(items)
    extra = schema.get("additionalProperties")
    if isinstance(extra, Mapping):
        node.additional = _build(extra)
    if node.rules or node.properties or node.items or node.additional:
        return node
    return None


def with_defaults(schema: Mapping[str, Any], value: Any) -> Any:
    """``value`` with the schema's ``default`` values filled in (a copy where it changes)."""
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        out = dict(value)
        for key, sub in props.items():
            if key not in out and isinstance(sub, Mapping) and "default" in sub:
                out[key] = sub["default"]
            if key in out and isinstance(sub, Mapping):
                out[key] = with_defaults(sub, out[key])
        if isinstance(extra, Mapping):
            for key in out:
                if key not in props:
                    out[key] = with_defaults(extra, out[key])
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [with_defaults(schema["items"], v) for v in value]
    return value


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    return None


class RuleSet:
    """The validation rules of one CRD version's schema."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self._root = _build(schema)

    @property
    def empty(self) -> bool:
        return self._root is None

    def problems(self, obj: Mapping[str, Any], old: Mapping[str, Any] | None = None
                 ) -> list[RuleProblem]:
        if self._root is None:
            return []
        out: list[RuleProblem] = []
        self._walk(self._root, dict(obj), old, "", out)
        return out

    def _walk(self, node: _Node, value: Any, old: Any, path: str, out: list[RuleProblem]) -> None:
        if value is None:
            return
        if node.rules:
            self._check(node, value, old, path, out)
        if isinstance(value, dict):
            for key, child in node.properties.items():
                if key in value:
                    self._walk(child, value[key], old.get(key) if isinstance(old, dict) else None,
                               _child(path, key), out)
            if node.additional is not None:
                for key, item in value.items():
                    if key not in node.properties:
                        self._walk(node.additional, item,
                                   old.get(key) if isinstance(old, dict) else None,
                                   f"{path}[{key}]", out)
        elif isinstance(value, list) and node.items is not None:
            for i, item in enumerate(value):
                self._walk(node.items, item, None, f"{path}[{i}]", out)

    def _check(self, node: _Node, value: Any, old: Any, path: str,
               out: list[RuleProblem]) -> None:
        from celpy import CELEvalError

        current = with_defaults(node.schema, value)
        activation: dict[str, Any] = {"self": _to_cel(current)}
        stype = str(node.schema.get("type") or "")
        for rule in node.rules:
            text = str(rule["rule"])
            transition = bool(_OLD_SELF.search(text))
            if transition:
                if old is None and not rule.get("optionalOldSelf"):
                    continue
                activation["oldSelf"] = _to_cel(
                    with_defaults(node.schema, old) if old is not None else None)
            program = _program(text)
            if program is None:
                continue
            where = path
            field_path = rule.get("fieldPath")
            if isinstance(field_path, str) and field_path:
                where = (path + field_path) if field_path.startswith(("[", ".")) else \
                    _child(path, field_path)
                where = where.lstrip(".")
            where = where or "<nil>"
            label = str(rule.get("message") or "").strip() or text.strip()
            try:
                result = program.evaluate(activation)
            except CELEvalError as exc:
                message = str(exc.args[0]) if exc.args else str(exc)
                if "undeclared reference" in message or "no matching overload" in message \
                        or "unsupported" in message.lower():
                    _skip_once(text, f"celpy cannot evaluate it: {message[:120]}")
                    continue
                key = re.search(r"no such (?:member in mapping|key): '?([^']*)'?", message)
                error = f"no such key: {key.group(1)}" if key else message
                out.append(RuleProblem(where, "FieldValueInvalid",
                                       f'Invalid value: "{stype}": {error} evaluating rule: '
                                       f"{label}"))
                continue
            except Exception as exc:  # a library bug must not fail the request
                _skip_once(text, f"celpy failed: {type(exc).__name__}: {exc}")
                continue
            if isinstance(result, Exception):
                _skip_once(text, f"celpy failed: {result}")
                continue
            if bool(result):
                continue
            out.append(self._failure(rule, activation, where, stype, text))

    def _failure(self, rule: Mapping[str, Any], activation: Mapping[str, Any], where: str,
                 stype: str, text: str) -> RuleProblem:
        message = str(rule.get("message") or "").strip()
        expression = rule.get("messageExpression")
        if isinstance(expression, str) and expression:
            program = _program(expression)
            if program is not None:
                try:
                    made = _text(program.evaluate(dict(activation)))
                except Exception:  # the server falls back to message as well
                    made = None
                if made and made.strip() and "\n" not in made:
                    message = made.strip()
        if not message:
            message = f"failed rule: {text.strip()}"
        reason = str(rule.get("reason") or "FieldValueInvalid")
        if reason not in _REASONS:
            reason = "FieldValueInvalid"
        if reason == "FieldValueInvalid":
            detail = f'Invalid value: "{stype}": {message}'
        elif reason == "FieldValueDuplicate":
            detail = f'Duplicate value: "{stype}"'
        else:
            detail = f"{_REASONS[reason]}: {message}"
        return RuleProblem(where, reason, detail)


def rule_set(schema: Mapping[str, Any]) -> RuleSet:
    """A :class:`RuleSet` (callers cache it per CRD version)."""
    return RuleSet(schema)
