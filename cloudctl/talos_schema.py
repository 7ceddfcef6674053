"""Validation of Talos machine configs against the vendored upstream JSON schemas.

A Talos machine config is a stream of YAML documents: the legacy ``v1alpha1`` document (keyed
by ``version: v1alpha1``, no ``kind``) and, from v1.5 on, typed documents (``apiVersion`` +
``kind``). The vendored schema of each Talos minor (``talos/schemas/config.schema.v1.NN.json``)
is a top-level ``oneOf`` over every document type; instead of matching the whole ``oneOf`` (whose
errors are unreadable), each document is routed to its branch by ``version`` or
``apiVersion``/``kind`` and validated against that branch alone, so each message names the
document, its kind and the JSON path of the offending field.

Strictness matches Talos: unknown fields are rejected (every object of the vendored schemas
sets ``additionalProperties: false``; :func:`_assert_closed_schema` checks that at load time),
duplicate YAML keys are rejected (Go's yaml.v3 decoder refuses them), and a document of the
same kind/name may appear once.

Where the schema is stricter than Talos: from v1.12 on the vendored schemas leave out the
deprecated v1alpha1 fields whose settings moved to typed documents (``machine.network.*`` except
``kubespan``, ``machine.time``, ``machine.registries``, ``features.rbac`` ...). Talos still
decodes them with a deprecation warning; here they are unknown fields, which is what guarantees
a rendered config never sets something both in a document and in v1alpha1. The one hidden field
accepted is ``persist`` (see ``_HIDDEN_FIELDS``).

Everything here is pure apart from reading the vendored schema once per minor.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable
from typing import Any

import jsonschema
import yaml

from cloudctl import resources
from cloudctl.errors import InputError, Problem, RenderError
from cloudctl.util.paths import format_path
from cloudctl.util.yamlcache import SAFE_LOADER

V1ALPHA1 = "v1alpha1"
"""Pseudo-kind used in messages for the legacy ``version: v1alpha1`` document."""

_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)(?:\.\d+.*)?$")


def talos_minor(talos_version: str) -> str:
    """'v1.12.3', '1.12', 'v1.12' -> '1.12'."""
    m = _VERSION_RE.match(talos_version.strip())
    if not m:
        raise RenderError(f"not a Talos version: {talos_version!r} (expected e.g. v1.12.0)")
    return f"{int(m.group(1))}.{int(m.group(2))}"


def supported_minors() -> list[str]:
    """Talos minors with a vendored config schema, oldest first."""
    names = sorted(resources.data_path("talos", "schemas").glob("config.schema.v*.json"))
    found = [p.name.removeprefix("config.schema.v").removesuffix(".json") for p in names]
    return sorted(found, key=lambda v: tuple(int(x) for x in v.split(".")))


# --------------------------------------------------------------------------------------------
# YAML parsing


class _StrictLoader(SAFE_LOADER):  # type: ignore[misc]
    """Safe loader (libyaml-backed when available) refusing duplicate mapping keys, as Talos'
    Go decoder does."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        result[key] = loader.construct_object(value_node, deep=True)
    return result


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def split_documents(text: str) -> list[dict[str, Any]]:
    """Parse a (multi-document) machine config into its YAML documents, in order.

    Empty documents (e.g. a trailing ``---``) are skipped. Raises :class:`InputError` naming the
    document number (1-based) and line for invalid YAML, a duplicate key or a document that is
    not a mapping.
    """
    docs: list[dict[str, Any]] = []
    try:
        for index, doc in enumerate(yaml.load_all(text, Loader=_StrictLoader), start=1):
            if doc is None:
                continue
            if not isinstance(doc, dict):
                raise InputError(
                    Problem(f"document {index}", f"must be a mapping, got {type(doc).__name__}")
                )
            docs.append(doc)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(Problem("machine config", f"invalid YAML: {problem}", line=line)) from exc
    return docs


# --------------------------------------------------------------------------------------------
# Schema loading


@functools.cache
def _schema(minor: str) -> dict[str, Any]:
    try:
        text = resources.read_text("talos", f"schemas/config.schema.v{minor}.json")
    except FileNotFoundError:
        have = ", ".join(f"v{m}" for m in supported_minors())
        raise RenderError(
            f"no vendored Talos config schema for v{minor} (have {have})"
        ) from None
    schema: dict[str, Any] = json.loads(text)
    _assert_closed_schema(schema, minor)
    _add_hidden_fields(schema)
    return schema


# Fields Talos' Go types still decode but the schema generator leaves out (``docgen:nodoc``).
# ``persist`` is deprecated, yet ``talosctl gen config`` (and cloudctl, to match it) still
# writes ``persist: true``; rejecting it would refuse configs real Talos accepts.
_HIDDEN_FIELDS: dict[str, dict[str, Any]] = {
    "v1alpha1.Config": {"persist": {"type": "boolean"}},
}


def _add_hidden_fields(schema: dict[str, Any]) -> None:
    for definition, fields in _HIDDEN_FIELDS.items():
        props = schema["$defs"][definition]["properties"]
        for name, subschema in fields.items():
            props.setdefault(name, subschema)


def _assert_closed_schema(schema: dict[str, Any], minor: str) -> None:
    """Every object definition with properties must forbid unknown keys (Talos does)."""
    for name, definition in schema["$defs"].items():
        if "properties" in definition and definition.get("additionalProperties") is not False:
            raise RenderError(
                f"vendored Talos v{minor} schema: {name} allows unknown fields; "
                "strictness would not match Talos"
            )


@functools.cache
def _branches(minor: str) -> dict[tuple[str, str], str]:
    """(apiVersion, kind) -> $defs name; the v1alpha1 document is keyed (V1ALPHA1, '')."""
    schema = _schema(minor)
    table: dict[tuple[str, str], str] = {}
    for branch in schema["oneOf"]:
        name = branch["$ref"].removeprefix("#/$defs/")
        props = schema["$defs"][name]["properties"]
        if "kind" in props:
            for api in props["apiVersion"]["enum"]:
                for kind in props["kind"]["enum"]:
                    table[(api, kind)] = name
        else:
            table[(V1ALPHA1, "")] = name
    return table


def _inline_refs(node: Any, defs: dict[str, Any], active: tuple[str, ...] = ()) -> Any:
    """``node`` with every local ``$ref`` replaced by the definition it names.

    jsonschema resolves each ``$ref`` on every validation, which dominated rendering large
    racks; the Talos schemas are trees of struct definitions, so inlining once is exact. A
    recursive reference (none today) is left as ``$ref`` and still resolves through ``$defs``.
    """
    if isinstance(node, list):
        return [_inline_refs(item, defs, active) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        name = ref.removeprefix("#/$defs/")
        if name in defs and name not in active:
            target = _inline_refs(defs[name], defs, (*active, name))
            rest = {k: v for k, v in node.items() if k != "$ref"}
            if not rest:
                return target
            return {"allOf": [target, _inline_refs(rest, defs, active)]}
    return {k: _inline_refs(v, defs, active) for k, v in node.items()}


@functools.cache
def _validator(minor: str, definition: str) -> jsonschema.protocols.Validator:
    schema = _schema(minor)
    defs = schema["$defs"]
    sub = {
        "$schema": schema["$schema"],
        "$defs": defs,
        **_inline_refs(defs[definition], defs, (definition,)),
    }
    # The vendored schema is checked against its metaschema by the unit tests, not here: that
    # check costs ~0.5 s per minor and the data cannot change at run time.
    return jsonschema.validators.validator_for(sub)(sub)


# --------------------------------------------------------------------------------------------
# Fast path: a compiled "is this valid?" check


class _Unsure(Exception):
    """The fast check cannot decide (a keyword or value it does not model): ask jsonschema."""


_Check = Callable[[Any], bool]

# keywords that never affect validity (``format`` is an annotation: the validators here are
# built without a format checker, as jsonschema's are)
_ANNOTATIONS = frozenset(
    {"description", "title", "markdownDescription", "x-intellij-html-description", "format",
     "$schema", "$id", "$defs", "$comment", "default", "examples"}
)


def _type_check(name: str) -> _Check:
    def integer(v: Any) -> bool:
        if isinstance(v, float):
            raise _Unsure  # jsonschema counts 1.0 as an integer; leave such cases to it
        return isinstance(v, int) and not isinstance(v, bool)

    def number(v: Any) -> bool:
        if isinstance(v, bool):
            return False
        if isinstance(v, int | float):
            return True
        if isinstance(v, str | list | dict) or v is None:
            return False
        raise _Unsure

    checks: dict[str, _Check] = {
        "string": lambda v: isinstance(v, str),
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
        "integer": integer,
        "number": number,
    }
    if name not in checks:
        raise _Unsure
    return checks[name]


def _compile(schema: Any) -> _Check:
    """A function telling exactly whether a value is valid against ``schema`` (the subset of
    JSON Schema 2020-12 the Talos schemas use, with jsonschema's semantics); it raises
    :class:`_Unsure` where it does not model a case. Raises :class:`_Unsure` here for a schema
    using anything else, so the caller keeps jsonschema for it."""
    if schema is True:
        return lambda v: True
    if schema is False:
        return lambda v: False
    if not isinstance(schema, dict):
        raise _Unsure
    unknown = set(schema) - _ANNOTATIONS - {
        "type", "enum", "pattern", "properties", "patternProperties", "additionalProperties",
        "required", "items", "oneOf", "allOf",
    }
    if unknown:
        raise _Unsure
    checks: list[_Check] = []
    if "type" in schema:
        if not isinstance(schema["type"], str):
            raise _Unsure
        checks.append(_type_check(schema["type"]))
    if "enum" in schema:
        strings = frozenset(e for e in schema["enum"] if isinstance(e, str))

        def enum(v: Any) -> bool:
            if isinstance(v, str):
                return v in strings
            raise _Unsure  # jsonschema's equality (1 vs True vs 1.0) is not modelled

        checks.append(enum)
    if "pattern" in schema:
        search = re.compile(schema["pattern"]).search
        checks.append(lambda v: not isinstance(v, str) or search(v) is not None)
    if "required" in schema:
        required = tuple(schema["required"])
        checks.append(
            lambda v: not isinstance(v, dict) or all(name in v for name in required)
        )
    props = {k: _compile(sub) for k, sub in schema.get("properties", {}).items()}
    patterns = [(re.compile(p).search, _compile(sub))
                for p, sub in schema.get("patternProperties", {}).items()]
    joined = "|".join(schema.get("patternProperties", {}))
    any_pattern = re.compile(joined).search if joined else None
    additional = schema.get("additionalProperties", True)
    extra = _compile(additional) if additional is not True else None
    if props or patterns or extra is not None:

        def mapping(v: Any) -> bool:
            if not isinstance(v, dict):
                return True
            for key, value in v.items():
                if not isinstance(key, str):
                    raise _Unsure
                check = props.get(key)
                if check is not None and not check(value):
                    return False
                for search, sub in patterns:
                    if search(key) is not None and not sub(value):
                        return False
                # "additional" exactly as jsonschema decides it: not a property, not matching
                # the patterns joined with "|"
                if (
                    check is None
                    and extra is not None
                    and not (any_pattern is not None and any_pattern(key) is not None)
                    and not extra(value)
                ):
                    return False
            return True

        checks.append(mapping)
    if "items" in schema:
        item = _compile(schema["items"])
        checks.append(lambda v: not isinstance(v, list) or all(item(x) for x in v))
    if "oneOf" in schema:
        branches = [_compile(sub) for sub in schema["oneOf"]]
        checks.append(lambda v: sum(1 for b in branches if b(v)) == 1)
    if "allOf" in schema:
        parts = [_compile(sub) for sub in schema["allOf"]]
        checks.append(lambda v: all(p(v) for p in parts))
    if len(checks) == 1:
        return checks[0]
    return lambda v: all(c(v) for c in checks)


@functools.cache
def _fast_check(minor: str, definition: str) -> _Check | None:
    """The compiled check of one document type, None where jsonschema must do it all."""
    schema = _schema(minor)
    defs = schema["$defs"]
    try:
        return _compile(_inline_refs(defs[definition], defs, (definition,)))
    except (_Unsure, re.error):
        return None


def known_kinds(talos_version: str) -> list[str]:
    """Document kinds the given Talos minor accepts (``v1alpha1`` for the legacy document)."""
    return sorted(kind or V1ALPHA1 for _, kind in _branches(talos_minor(talos_version)))


# --------------------------------------------------------------------------------------------
# Validation


def document_kind(doc: dict[str, Any]) -> str:
    """The kind of a parsed document, ``v1alpha1`` for the legacy one."""
    if "kind" not in doc and "version" in doc:
        return V1ALPHA1
    return str(doc.get("kind", "?"))


def _json_path(parts: Iterable[str | int]) -> str:
    return format_path(parts) or "(document root)"


def _describe(error: jsonschema.ValidationError) -> tuple[str, str]:
    """(JSON path, message) of one schema error; unknown keys get their own path."""
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(str(k) for k in error.instance if k not in allowed)
        if extra:
            return _json_path([*path, extra[0]]), (
                "unknown field" + (f" (also unknown: {', '.join(extra[1:])})" if extra[1:] else "")
            )
    if error.validator == "type":
        expected = error.validator_value
        return _json_path(path), f"wrong type: expected {expected}, got {error.instance!r}"
    if error.validator == "enum":
        return _json_path(path), f"{error.instance!r} is not one of {error.validator_value}"
    return _json_path(path), error.message


def _doc_label(index: int, doc: dict[str, Any]) -> str:
    kind = document_kind(doc)
    name = doc.get("name")
    named = f" {name!r}" if isinstance(name, str) and kind != V1ALPHA1 else ""
    return f"document {index} ({kind}{named})"


def validate_documents(docs: list[dict[str, Any]], talos_version: str) -> list[str]:
    """Validate parsed documents; one message per problem, empty when valid."""
    minor = talos_minor(talos_version)
    branches = _branches(minor)
    problems: list[str] = []
    seen: dict[tuple[str, str], int] = {}
    for index, doc in enumerate(docs, start=1):
        label = _doc_label(index, doc)
        if "kind" in doc or "apiVersion" in doc:
            key = (str(doc.get("apiVersion", "")), str(doc.get("kind", "")))
        elif doc.get("version") == V1ALPHA1:
            key = (V1ALPHA1, "")
        else:
            problems.append(
                f"{label}: neither 'apiVersion'/'kind' nor 'version: v1alpha1' is set"
            )
            continue
        definition = branches.get(key)
        if definition is None:
            problems.append(
                f"{label}: unknown document apiVersion={key[0]!r} kind={key[1]!r} "
                f"for Talos v{minor}"
            )
            continue
        identity = (key[1] or V1ALPHA1, str(doc.get("name", "")))
        if identity in seen:
            problems.append(f"{label}: duplicate of document {seen[identity]}")
        else:
            seen[identity] = index
        for path, message in _document_problems(minor, key, doc):
            problems.append(f"{label}: {path}: {message}")
    return problems


_PROBLEM_CACHE: dict[tuple[str, tuple[str, str], str], tuple[tuple[str, str], ...]] = {}
_PROBLEM_CACHE_MAX = 8192


def _document_problems(
    minor: str, key: tuple[str, str], doc: dict[str, Any]
) -> tuple[tuple[str, str], ...]:
    """Schema problems of one document, cached by content: the documents of a large rack repeat
    (every worker's v1alpha1 document, ResolverConfig, RegistryMirrorConfig, ...), and schema
    validation is most of the cost of rendering 1,000 nodes. Values that are not JSON (a YAML
    timestamp in a user patch) make the document uncacheable, never wrongly cached.

    Before that, the compiled check (``_fast_check``) decides, value by value, whether the
    document is valid: per-node documents (HostnameConfig, LinkConfig, ...) differ on every
    node, and the check validates each of them in full at a fraction of jsonschema's cost.
    Only a document it finds invalid, or cannot decide, goes to jsonschema, which names the
    problems."""
    try:
        cache_key = (minor, key, json.dumps(doc, sort_keys=True))
    except (TypeError, ValueError):
        cache_key = None
    if cache_key is not None and cache_key in _PROBLEM_CACHE:
        return _PROBLEM_CACHE[cache_key]
    definition = _branches(minor)[key]
    result: tuple[tuple[str, str], ...] = ()
    check = _fast_check(minor, definition)
    try:
        valid = check is not None and check(doc)
    except _Unsure:
        valid = False
    if not valid:
        errors = sorted(
            _validator(minor, definition).iter_errors(doc),
            key=lambda e: [str(p) for p in e.absolute_path],
        )
        result = tuple(_describe(error) for error in errors)
    if cache_key is not None:
        if len(_PROBLEM_CACHE) >= _PROBLEM_CACHE_MAX:
            _PROBLEM_CACHE.clear()
        _PROBLEM_CACHE[cache_key] = result
    return result


def validate_config(text: str, talos_version: str) -> list[str]:
    """Validate every YAML document of a machine config against the Talos minor's schema.

    Returns one human-readable message per problem (empty list: valid). Each names the document
    (1-based number and kind) and the JSON path of the offending field, e.g.
    ``document 1 (v1alpha1): machine.kubelet.foo: unknown field``. Invalid YAML is reported as a
    single message. Raises :class:`RenderError` only for a Talos version with no vendored schema.
    """
    try:
        docs = split_documents(text)
    except InputError as exc:
        return [str(p) for p in exc.problems]
    if not docs:
        return ["machine config is empty"]
    return validate_documents(docs, talos_version)
