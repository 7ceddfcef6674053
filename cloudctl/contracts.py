"""Contract validation against upstream schemas: CRD ``openAPIV3Schema`` and chart
``values.schema.json``.

Pure functions over parsed documents (no I/O): callers load the schema text (from the project's
data directories, or from CRDs applied to the Kubernetes API emulator) and pass the parsed dicts.

Public surface::

    crd_schemas(crd) -> dict[(group, version, kind), CrdSchema]   # one per served version
    CrdRegistry.from_documents(docs)          # every CRD among parsed YAML documents
    registry.validate(obj) -> list[Problem]   # a custom resource, [] when valid
    registry.check(obj, source)               # raises ContractError naming each field
    values_validator(schema)                  # validator class chosen from "$schema"
    validate_values(values, schema) -> list[Problem]
    openapi_to_jsonschema(schema) -> dict     # the conversion, exposed for tests and reuse

How an OpenAPI v3 structural schema maps to JSON Schema here (what the API server enforces with
strict field validation, which ``kubectl apply --server-side`` uses by default):

- ``nullable: true`` lets the value be ``null`` besides its type;
- ``x-kubernetes-int-or-string: true`` accepts an integer or a string;
- ``x-kubernetes-preserve-unknown-fields: true`` keeps unknown keys; anywhere else an object
  accepts only the ``properties`` it declares (the API server would reject or prune the rest,
  so an unknown key is a contract violation, reported with its path);
- ``x-kubernetes-embedded-resource: true`` implies ``apiVersion``, ``kind`` and ``metadata``;
- the root ``metadata`` (and that of embedded resources) is checked as an ObjectMeta subset
  (name, namespace, labels, annotations: their types) since CRDs declare it as ``type: object``.
- CEL rules (``x-kubernetes-validations``) are not evaluated; formats are not asserted.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator

from .errors import Problem, RenderError
from .util.paths import format_path

__all__ = [
    "ContractError",
    "CrdRegistry",
    "CrdSchema",
    "crd_schemas",
    "format_path",
    "openapi_to_jsonschema",
    "validate_values",
    "values_validator",
]


class ContractError(RenderError):
    """A rendered artefact broke an upstream contract (exit code 4); lists every problem."""

    def __init__(self, problems: list[Problem], *, source: str) -> None:
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} contract violation(s):\n{lines}")


# --------------------------------------------------------------------------- errors


def _leaf_errors(err: ValidationError) -> list[ValidationError]:
    """Descend into anyOf/oneOf to the most specific errors (what a user needs to see)."""
    if err.context:
        # keep the branch that got deepest into the document: it is the intended one
        deepest = max(len(e.absolute_path) for e in err.context)
        if deepest > len(err.absolute_path):
            out: list[ValidationError] = []
            for e in err.context:
                if len(e.absolute_path) == deepest:
                    out.extend(_leaf_errors(e))
            return out
    return [err]


def _problems(
    validator: Validator, instance: Any, prefix: tuple[str | int, ...] = ()
) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[tuple[str, str]] = set()
    for top in validator.iter_errors(instance):
        for err in _leaf_errors(top):
            path: tuple[str | int, ...] = prefix + tuple(err.absolute_path)
            message = err.message
            if err.validator == "additionalProperties" and isinstance(err.instance, dict):
                allowed = set(err.schema.get("properties", {}))
                extra = sorted(k for k in err.instance if k not in allowed)
                for key in extra:
                    item = (format_path((*path, key)), "unknown field (not in the schema)")
                    if item not in seen:
                        seen.add(item)
                        problems.append(Problem(*item))
                continue
            if err.validator == "enum":
                message = f"{err.instance!r} is not one of {err.validator_value!r}"
            item = (format_path(path), message)
            if item not in seen:
                seen.add(item)
                problems.append(Problem(*item))
    problems.sort(key=lambda p: (p.path, p.message))
    return problems


# --------------------------------------------------------------------------- OpenAPI -> JSON Schema

_OBJECT_META: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "generateName": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "finalizers": {"type": "array", "items": {"type": "string"}},
    },
}

_SCHEMA_KEYS_WITH_SUBSCHEMA = ("items", "additionalProperties", "not")
_SCHEMA_KEYS_WITH_SCHEMA_LIST = ("allOf", "anyOf", "oneOf")


def openapi_to_jsonschema(schema: Mapping[str, Any], *, root: bool = True) -> dict[str, Any]:
    """Convert a CRD ``openAPIV3Schema`` (structural) into an equivalent strict JSON Schema."""
    return _convert(schema, is_root=root)


def _convert(node: Mapping[str, Any], *, is_root: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in ("nullable", "example", "externalDocs"):
            continue
        if key == "properties":
            props: dict[str, Any] = {}
            for name, sub in value.items():
                if is_root and name == "metadata":
                    props[name] = copy.deepcopy(_OBJECT_META)
                else:
                    props[name] = _convert(sub, is_root=False)
            out["properties"] = props
        elif key in _SCHEMA_KEYS_WITH_SUBSCHEMA and isinstance(value, Mapping):
            out[key] = _convert(value, is_root=False)
        elif key in _SCHEMA_KEYS_WITH_SCHEMA_LIST:
            out[key] = [_convert(v, is_root=False) for v in value]
        else:
            out[key] = copy.deepcopy(value)

    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        if "anyOf" in out:  # a declared anyOf stays as an extra constraint
            out["allOf"] = [*out.get("allOf", []), {"anyOf": out.pop("anyOf")}]
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]

    embedded = bool(node.get("x-kubernetes-embedded-resource"))
    if embedded:
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props["metadata"] = copy.deepcopy(_OBJECT_META)

    is_object = out.get("type") == "object" or "properties" in out
    preserve = bool(node.get("x-kubernetes-preserve-unknown-fields"))
    if is_object and not preserve and "additionalProperties" not in out:
        # structural schema without preserve-unknown-fields: undeclared keys are not accepted
        out["additionalProperties"] = False
    if is_root:
        # every object may carry apiVersion/kind/metadata at its root
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", copy.deepcopy(_OBJECT_META))
        props.setdefault("status", {})

    if node.get("nullable") and "type" in out:
        t = out["type"]
        types = list(t) if isinstance(t, list) else [t]
        if "null" not in types:
            out["type"] = [*types, "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    return out


# --------------------------------------------------------------------------- CRDs


@dataclass(frozen=True)
class CrdSchema:
    group: str
    version: str
    kind: str
    plural: str
    scope: str
    json_schema: dict[str, Any]

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    def validator(self) -> Validator:
        return Draft202012Validator(self.json_schema)


GVK = tuple[str, str, str]


def crd_schemas(crd: Mapping[str, Any]) -> dict[GVK, CrdSchema]:
    """Every served version of one CustomResourceDefinition (apiextensions.k8s.io/v1)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group, kind = spec.get("group", ""), names.get("kind", "")
    out: dict[GVK, CrdSchema] = {}
    for ver in spec.get("versions") or []:
        if not ver.get("served", True):
            continue
        raw = ((ver.get("schema") or {}).get("openAPIV3Schema")) or {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
        }
        out[(group, ver["name"], kind)] = CrdSchema(
            group=group,
            version=ver["name"],
            kind=kind,
            plural=names.get("plural", ""),
            scope=spec.get("scope", "Namespaced"),
            json_schema=openapi_to_jsonschema(raw),
        )
    return out


class CrdRegistry:
    """Schemas of custom resources by (group, version, kind), with cached validators."""

    def __init__(self) -> None:
        self._schemas: dict[GVK, CrdSchema] = {}
        self._validators: dict[GVK, Validator] = {}

    @classmethod
    def from_documents(cls, docs: Iterable[Any]) -> CrdRegistry:
        reg = cls()
        for doc in docs:
            if isinstance(doc, Mapping) and doc.get("kind") == "CustomResourceDefinition":
                reg.add(doc)
        return reg

    def add(self, crd: Mapping[str, Any]) -> None:
        for gvk, schema in crd_schemas(crd).items():
            self._schemas[gvk] = schema
            self._validators.pop(gvk, None)

    def merge(self, other: CrdRegistry) -> CrdRegistry:
        self._schemas.update(other._schemas)
        self._validators.clear()
        return self

    def __contains__(self, gvk: object) -> bool:
        return gvk in self._schemas

    def kinds(self) -> list[GVK]:
        return sorted(self._schemas)

    def schema(self, api_version: str, kind: str) -> CrdSchema | None:
        group, _, version = api_version.rpartition("/")
        return self._schemas.get((group, version, kind))

    def validate(self, obj: Mapping[str, Any]) -> list[Problem]:
        """Problems of one custom resource against its CRD; a kind without CRD is a problem."""
        api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
        group, _, version = str(api_version).rpartition("/")
        gvk = (group, version, str(kind))
        if gvk not in self._schemas:
            return [Problem("apiVersion", f"no CRD serves {kind} in {api_version}")]
        validator = self._validators.get(gvk)
        if validator is None:
            validator = self._validators[gvk] = self._schemas[gvk].validator()
        return _problems(validator, obj)

    def check(self, obj: Mapping[str, Any], *, source: str) -> None:
        problems = self.validate(obj)
        if problems:
            raise ContractError(problems, source=source)


# --------------------------------------------------------------------------- values schemas


def _normalise_schema_uri(uri: str) -> str:
    u = uri.strip()
    for scheme in ("https://", "http://"):
        if u.startswith(scheme):
            u = u[len(scheme) :]
    return u.rstrip("#").rstrip("/")


def _known_validators() -> dict[str, type[Validator]]:
    known: dict[str, type[Validator]] = {}
    for cls in (
        jsonschema.Draft4Validator,
        jsonschema.Draft6Validator,
        jsonschema.Draft7Validator,
        jsonschema.Draft201909Validator,
        jsonschema.Draft202012Validator,
    ):
        meta = cls.META_SCHEMA
        uri = meta.get("$id") or meta.get("id") or ""
        known[_normalise_schema_uri(uri)] = cls
    return known


_VALIDATORS = _known_validators()


def values_validator(schema: Mapping[str, Any]) -> type[Validator]:
    """The validator class a schema's ``$schema`` names, ignoring http/https and a trailing '#'.

    (jsonschema itself only recognises the exact meta-schema URIs; MetalLB declares
    ``https://json-schema.org/draft-07/schema#``, which it would silently treat as the newest
    draft.) No ``$schema``: Draft 2020-12. An unknown ``$schema`` is an error, not a guess.
    """
    uri = schema.get("$schema")
    if not uri:
        return Draft202012Validator
    cls = _VALIDATORS.get(_normalise_schema_uri(str(uri)))
    if cls is None:
        raise RenderError(f"values schema declares an unknown $schema {uri!r}")
    return cls


def validate_values(
    values: Mapping[str, Any], schema: Mapping[str, Any], *, prefix: tuple[str | int, ...] = ()
) -> list[Problem]:
    """Problems of a Helm values document against a chart's ``values.schema.json``."""
    cls = values_validator(schema)
    return _problems(cls(schema), values, prefix)
