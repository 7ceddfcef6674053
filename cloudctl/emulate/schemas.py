"""The emulators' own checks against the vendored upstream schemas (DESIGN.md #10).

The emulators stand in for Talos and Helm, so they must not judge cloudctl's output with
cloudctl's own validators (``cloudctl.talos_schema``, ``cloudctl.contracts``, the render
layer): a bug there would then be invisible end to end. This module reads the vendored upstream
files directly (located with :mod:`cloudctl.resources`, nothing else of the product) and
validates with ``jsonschema``:

- Talos machine configs: each YAML document (duplicate keys refused, as Go's yaml.v3 does) is
  matched to the branch of the Talos minor's ``config.schema.v1.NN.json`` ``oneOf`` that its
  ``apiVersion``/``kind`` (or ``version: v1alpha1``) names, and validated against
  ``{"$ref": "#/$defs/<branch>"}`` with the schema's ``$defs`` alongside, so jsonschema
  resolves the references inside the vendored document. Every object definition there sets
  ``additionalProperties: false``: unknown keys are rejected as Talos rejects them. The one
  field Talos' Go types decode but the schema omits, ``persist`` (written by ``talosctl gen
  config``), is accepted.
- Helm chart values: ``helm-values/_upstream/<chart>/<version>/`` holds an upstream chart's
  ``Chart.yaml``, ``values.yaml`` and ``values.schema.json``; as Helm does, the chart's default
  values are coalesced with the release's values (``null`` deletes a default) and the result is
  validated against the schema, with the JSON Schema draft its ``$schema`` names. A chart
  version without a vendored schema is not checked (Helm would use that chart's own schema,
  which is not here).
- Custom resources (the API server's part): a CRD's structural ``openAPIV3Schema`` gives the
  value constraints (``nullable``, ``x-kubernetes-int-or-string`` translated, the root
  ``metadata`` checked as ObjectMeta) validated with jsonschema, and, separately, a walk of the
  object along the schema finds undeclared keys as the API server's pruning does
  (``x-kubernetes-preserve-unknown-fields`` and ``additionalProperties`` keep them). The CEL
  validation rules (``x-kubernetes-validations``) are evaluated by
  :mod:`cloudctl.emulate.kube_cel` (``rule_problems``); formats are not asserted.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import jsonschema
import yaml
from jsonschema.protocols import Validator

from .. import resources
from ..util.yamlcache import SAFE_LOADER
from ..util.yamlcache import safe_load as yaml_safe_load
from .kube_cel import RuleProblem, RuleSet

__all__ = [
    "UNKNOWN_FIELD",
    "ConfigRejected",
    "CrdValidators",
    "builtin_unknown_fields",
    "chart_values_validators",
    "duplicate_fields",
    "parse_config",
    "served_versions",
    "talos_config_problems",
    "values_problems",
    "vendored_charts",
]

V1ALPHA1 = "v1alpha1"
_HIDDEN_V1ALPHA1_FIELDS = {"persist": {"type": "boolean"}}


class ConfigRejected(ValueError):
    """A machine config Talos cannot even decode (YAML error, duplicate key, not a mapping)."""


# --------------------------------------------------------------------------- YAML


class _UniqueKeyLoader(SAFE_LOADER):  # type: ignore[misc]
    """Safe loading (libyaml's parser where PyYAML has it: every applied config is parsed),
    refusing a mapping key given twice as Talos' strict decoder does."""


def _mapping_without_duplicates(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise ConfigRejected(
                f"line {key_node.start_mark.line + 1}: mapping key {key!r} already defined"
            )
        out[key] = loader.construct_object(value_node, deep=True)
    return out


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def parse_config(text: str) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a machine config; :class:`ConfigRejected` otherwise."""
    docs: list[dict[str, Any]] = []
    try:
        for number, doc in enumerate(yaml.load_all(text, Loader=_UniqueKeyLoader), start=1):
            if doc is None:
                continue
            if not isinstance(doc, dict):
                raise ConfigRejected(f"document {number} is not a mapping")
            docs.append(doc)
    except yaml.YAMLError as exc:
        raise ConfigRejected(str(exc).replace("\n", " ")) from None
    return docs


# --------------------------------------------------------------------------- Talos


_MINOR = re.compile(r"^v?(\d+)\.(\d+)")


@functools.cache
def _talos_schema(minor: str) -> dict[str, Any]:
    path = resources.data_path("talos", f"schemas/config.schema.v{minor}.json")
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    v1 = next(
        (d for d in schema["$defs"].values()
         if "version" in d.get("properties", {}) and "kind" not in d.get("properties", {})),
        None,
    )
    if v1 is not None:
        for name, sub in _HIDDEN_V1ALPHA1_FIELDS.items():
            v1["properties"].setdefault(name, sub)
    return schema


@functools.cache
def _talos_branch(minor: str, api_version: str, kind: str) -> str | None:
    schema = _talos_schema(minor)
    for branch in schema.get("oneOf") or []:
        name = str(branch.get("$ref", "")).rsplit("/", 1)[-1]
        props = schema["$defs"].get(name, {}).get("properties", {})
        if kind == "" and api_version == V1ALPHA1:
            if "kind" not in props and V1ALPHA1 in (props.get("version") or {}).get("enum", []):
                return name
            continue
        apis = (props.get("apiVersion") or {}).get("enum", [])
        kinds = (props.get("kind") or {}).get("enum", [])
        if api_version in apis and kind in kinds:
            return name
    return None


@functools.cache
def _talos_validator(minor: str, branch: str) -> Validator:
    schema = _talos_schema(minor)
    root = {"$schema": schema.get("$schema"), "$defs": schema["$defs"],
            "$ref": f"#/$defs/{branch}"}
    cls = jsonschema.validators.validator_for(root)
    return cls(root)  # type: ignore[no-any-return]


def _pointer(path: Iterable[Any]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def talos_config_problems(docs: list[dict[str, Any]], talos_version: str) -> list[str]:
    """What the Talos minor's schema says about these documents ([]: accepted)."""
    m = _MINOR.match(talos_version)
    minor = f"{int(m.group(1))}.{int(m.group(2))}" if m else talos_version
    if not resources.data_path("talos", f"schemas/config.schema.v{minor}.json").is_file():
        return [f"no vendored config schema for Talos v{minor}"]
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()
    for number, doc in enumerate(docs, start=1):
        if "apiVersion" in doc or "kind" in doc:
            api, kind = str(doc.get("apiVersion", "")), str(doc.get("kind", ""))
        elif doc.get("version") == V1ALPHA1:
            api, kind = V1ALPHA1, ""
        else:
            problems.append(f"document {number}: missing kind")
            continue
        label = f"document {number} ({kind or V1ALPHA1})"
        branch = _talos_branch(minor, api, kind)
        if branch is None:
            problems.append(f"{label}: unknown document apiVersion {api!r} kind {kind!r}")
            continue
        identity = (kind, str(doc.get("name", "")))
        if identity in seen:
            problems.append(f"{label}: duplicate document")
        seen.add(identity)
        for err in sorted(_talos_validator(minor, branch).iter_errors(doc),
                          key=lambda e: list(map(str, e.absolute_path))):
            where = _pointer(err.absolute_path) or "(root)"
            if err.validator == "additionalProperties" and isinstance(err.instance, dict):
                known = set(err.schema.get("properties", {}))
                for extra in sorted(str(k) for k in err.instance if k not in known):
                    problems.append(f"{label}: {_pointer([*err.absolute_path, extra])}: "
                                    "unknown field")
                continue
            problems.append(f"{label}: {where}: {err.message}")
    return problems


# --------------------------------------------------------------------------- Helm values


@functools.cache
def vendored_charts() -> dict[tuple[str, str], str]:
    """(chart name, version) -> directory under ``helm-values/`` of every vendored upstream
    chart that ships a ``values.schema.json``."""
    root = resources.data_dir("helm-values") / "_upstream"
    out: dict[tuple[str, str], str] = {}
    for chart_yaml in sorted(root.glob("*/*/Chart.yaml")):
        meta = yaml_safe_load(chart_yaml.read_text(encoding="utf-8")) or {}
        if (chart_yaml.parent / "values.schema.json").is_file():
            relative = chart_yaml.parent.relative_to(resources.data_dir("helm-values"))
            out[(str(meta["name"]), str(meta["version"]))] = relative.as_posix()
    return out


def _draft(schema: Mapping[str, Any]) -> type[Validator]:
    """The validator class of the draft ``$schema`` names (http/https, trailing '#' ignored)."""
    uri = str(schema.get("$schema") or "")
    key = re.sub(r"^https?://", "", uri).rstrip("#").rstrip("/")
    for cls in (jsonschema.Draft4Validator, jsonschema.Draft6Validator,
                jsonschema.Draft7Validator, jsonschema.Draft201909Validator,
                jsonschema.Draft202012Validator):
        meta = str(cls.META_SCHEMA.get("$id") or cls.META_SCHEMA.get("id") or "")
        if re.sub(r"^https?://", "", meta).rstrip("#").rstrip("/") == key:
            return cls  # type: ignore[return-value]
    return jsonschema.Draft202012Validator  # type: ignore[return-value]


@functools.cache
def _chart(directory: str) -> tuple[Validator, dict[str, Any]]:
    base = resources.data_dir("helm-values") / directory
    schema = json.loads((base / "values.schema.json").read_text(encoding="utf-8"))
    defaults_file = base / "values.yaml"
    defaults = (yaml_safe_load(defaults_file.read_text(encoding="utf-8")) or {}
                if defaults_file.is_file() else {})
    return _draft(schema)(schema), defaults


def _coalesce(defaults: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's merge of user values over chart defaults (``null`` removes a default)."""
    out = json.loads(json.dumps(defaults))
    for key, value in values.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _coalesce(out[key], value)
        else:
            out[key] = json.loads(json.dumps(value))
    return out  # type: ignore[no-any-return]


def values_problems(chart: str, version: str, values: Mapping[str, Any]) -> list[str]:
    """Helm's schema check of a release's values ([]: valid or no vendored schema)."""
    directory = vendored_charts().get((chart, version.lstrip("v")))
    if directory is None:
        directory = vendored_charts().get((chart, version))
    if directory is None:
        return []
    validator, defaults = _chart(directory)
    merged = _coalesce(defaults, values)
    out = []
    for err in sorted(validator.iter_errors(merged), key=lambda e: list(map(str, e.path))):
        pointer = "/" + "/".join(str(p) for p in err.absolute_path)
        out.append(f"at '{pointer}': {err.message}")
    return out


def chart_values_validators() -> dict[str, Any]:
    """Chart name -> ``check(values, version)`` for the Kubernetes emulator's helm-controller."""

    def make(chart: str) -> Any:
        def check(values: Mapping[str, Any], version: str) -> list[str]:
            return values_problems(chart, version, values)

        return check

    return {chart: make(chart) for chart, _ in vendored_charts()}


# --------------------------------------------------------------------------- built-in types


@functools.cache
def _builtin_definitions() -> dict[tuple[str, str, str], str]:
    """(group, version, kind) -> the upstream v2 definition of each built-in kind."""
    from .kube_openapi import swagger_definitions

    out: dict[tuple[str, str, str], str] = {}
    for name, definition in swagger_definitions().items():
        gvks = definition.get("x-kubernetes-group-version-kind") or []
        if len(gvks) == 1:  # shared meta types (DeleteOptions ...) name many
            g = gvks[0]
            out[(g.get("group", ""), g.get("version", ""), g.get("kind", ""))] = name
    return out


def _declared(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    from .kube_openapi import swagger_definitions

    while "$ref" in schema:
        schema = swagger_definitions()[str(schema["$ref"]).rsplit("/", 1)[-1]]
    return schema


def _builtin_unknown(
    schema: Mapping[str, Any], value: Any, path: str, out: list[str], prune: bool
) -> None:
    schema = _declared(schema)
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if props is None and not isinstance(extra, Mapping):
            return  # opaque: RawExtension, JSON, FieldsV1 ...
        dropped = []
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if props is not None and key in props:
                _builtin_unknown(props[key], item, where, out, prune)
            elif isinstance(extra, Mapping):
                _builtin_unknown(extra, item, where, out, prune)
            elif not schema.get("x-kubernetes-preserve-unknown-fields"):
                out.append(where)
                dropped.append(key)
        if prune:
            for key in dropped:
                del value[key]
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            _builtin_unknown(schema["items"], item, f"{path}[{i}]", out, prune)


_Node = tuple[Any, Any, Any, bool]  # (properties, additionalProperties, items, keep unknown)
_NODES: dict[int, _Node] = {}


def _node(schema: Mapping[str, Any]) -> _Node:
    """A schema's resolved parts, once per schema object (the definitions are loaded once)."""
    found = _NODES.get(id(schema))
    if found is None:
        resolved = _declared(schema)
        extra = resolved.get("additionalProperties")
        items = resolved.get("items")
        found = _NODES[id(schema)] = (
            resolved.get("properties"), extra if isinstance(extra, Mapping) else None,
            items if isinstance(items, Mapping) else None,
            bool(resolved.get("x-kubernetes-preserve-unknown-fields")))
    return found


def _any_unknown(schema: Mapping[str, Any], value: Any) -> bool:
    """Whether ``value`` has a field the schema does not declare (the fast check; the paths are
    only worked out when it says so)."""
    props, extra, items, keep = _node(schema)
    if type(value) is dict:
        if props is None and extra is None:
            return False
        for key, item in value.items():
            sub = props.get(key) if props is not None else None
            if sub is None:
                if extra is None:
                    if keep:
                        continue
                    return True
                sub = extra
            if type(item) in (dict, list) and _any_unknown(sub, item):
                return True
    elif type(value) is list and items is not None:
        return any(type(v) in (dict, list) and _any_unknown(items, v) for v in value)
    return False


def builtin_unknown_fields(
    api_version: str, kind: str, obj: dict[str, Any], *, prune: bool = False
) -> list[str]:
    """Paths (``spec.containers[0].foo``) of the fields of a built-in object that the upstream
    Kubernetes v1.35 OpenAPI definition of its kind does not declare: what the API server's
    strict decoding reports and its decoding drops (``prune``: removed from ``obj`` here, list
    items keep their other fields); [] for a kind without a vendored definition."""
    group, _, version = api_version.rpartition("/")
    name = _builtin_definitions().get((group, version, kind))
    if name is None:
        return []
    root = _ROOTS.get(name)
    if root is None:
        root = _ROOTS[name] = {"$ref": f"#/definitions/{name}"}
    if not _any_unknown(root, obj):
        return []
    out: list[str] = []
    _builtin_unknown(root, obj, "", out, prune)
    return out


_ROOTS: dict[str, Mapping[str, Any]] = {}


def duplicate_fields(body: bytes) -> list[str]:
    """Paths (``spec.replicas``, ``spec.containers[0].name``) of the keys a JSON request body
    repeats within one object, as the API server's strict decoding names them ([] for a body
    that is not a JSON object or array)."""
    marked: dict[int, tuple[dict[str, Any], list[str]]] = {}  # the dict kept alive: ids stay

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(items)
        if len(out) != len(items):
            seen: set[str] = set()
            repeated = []
            for key, _ in items:
                if key in seen:
                    repeated.append(key)
                seen.add(key)
            marked[id(out)] = (out, repeated)
        return out

    stripped = body.lstrip()
    if stripped[:1] not in (b"{", b"["):
        return []
    try:
        root = json.loads(body, object_pairs_hook=pairs)
    except ValueError:
        return []
    if not marked:
        return []
    found: list[str] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            entry = marked.get(id(value))
            for key in entry[1] if entry is not None and entry[0] is value else ():
                found.append(f"{path}.{key}" if path else key)
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else key)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]")

    walk(root, "")
    return found


# --------------------------------------------------------------------------- CRDs

UNKNOWN_FIELD = "unknown field (not in the schema)"
"""Message of an undeclared key: pruned, or rejected under strict field validation."""

_GVK = tuple[str, str, str]
_REGISTRIES = itertools.count(1)


def served_versions(crd: Mapping[str, Any]) -> dict[_GVK, dict[str, Any]]:
    """(group, version, kind) -> ``openAPIV3Schema`` of each served version of a CRD."""
    spec = crd.get("spec") or {}
    group, kind = spec.get("group", ""), (spec.get("names") or {}).get("kind", "")
    out: dict[_GVK, dict[str, Any]] = {}
    for ver in spec.get("versions") or []:
        if ver.get("served", True):
            schema = (ver.get("schema") or {}).get("openAPIV3Schema") or {
                "type": "object", "x-kubernetes-preserve-unknown-fields": True}
            out[(group, ver["name"], kind)] = schema
    return out


def _value_schema(node: Mapping[str, Any]) -> dict[str, Any]:
    """The value constraints of a structural schema as JSON Schema (unknown keys are found by
    :func:`_unknown_fields`, as the API server's pruning does, not here)."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties"):
            out[key] = {k: _value_schema(v) for k, v in value.items()}
        elif key in ("items", "not") or (key == "additionalProperties"
                                         and isinstance(value, Mapping)):
            out[key] = _value_schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [_value_schema(v) for v in value]
        elif key.startswith("x-kubernetes-") or key in ("nullable", "example",
                                                          "externalDocs", "description"):
            continue
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out = {"allOf": [out, {"type": ["integer", "string"]}]} if out else {
            "type": ["integer", "string"]}
    if node.get("nullable") and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


_META = {
    "type": "object",
    "properties": {
        "name": {"type": "string"}, "generateName": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "finalizers": {"type": "array", "items": {"type": "string"}},
    },
}
_META_KEYS = {"name", "generateName", "namespace", "labels", "annotations", "finalizers",
              "uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
              "ownerReferences", "deletionTimestamp", "deletionGracePeriodSeconds"}


def _unknown_fields(
    schema: Mapping[str, Any], value: Any, path: tuple[str | int, ...], out: list[tuple[Any, ...]],
    *, resource_root: bool = False, prune: bool = False,
) -> None:
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, Mapping):
            for i, item in enumerate(value):
                _unknown_fields(items, item, (*path, i), out, prune=prune)
        return
    if not isinstance(value, dict):
        return
    props = schema.get("properties") or {}
    extra = schema.get("additionalProperties")
    keep = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
    embedded = resource_root or bool(schema.get("x-kubernetes-embedded-resource"))
    dropped: list[str] = []
    for key, item in value.items():
        if embedded and key == "metadata":
            if isinstance(item, dict):
                extra_meta = [k for k in item if k not in _META_KEYS]
                out.extend((*path, key, k) for k in extra_meta)
                for k in extra_meta if prune else ():
                    del item[k]
        elif key in props:
            _unknown_fields(props[key], item, (*path, key), out, prune=prune)
        elif isinstance(extra, Mapping):
            _unknown_fields(extra, item, (*path, key), out, prune=prune)
        elif embedded and key in ("apiVersion", "kind"):
            continue
        elif not keep and extra is not True and (props or schema.get("type") == "object"):
            out.append((*path, key))
            dropped.append(key)
    for key in dropped if prune else ():
        del value[key]


def _dotted(path: Iterable[str | int]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


class CrdValidators:
    """Custom resource checks of the Kubernetes emulator, from applied CRDs."""

    def __init__(self) -> None:
        self._schemas: dict[_GVK, dict[str, Any]] = {}
        self._validators: dict[_GVK, Validator] = {}
        self._crds: dict[str, Mapping[str, Any]] = {}
        self._rules: dict[_GVK, RuleSet] = {}
        self._serial = next(_REGISTRIES)
        self._revision = 0

    @classmethod
    def from_documents(cls, docs: Iterable[Any]) -> CrdValidators:
        reg = cls()
        for doc in docs:
            if isinstance(doc, Mapping) and doc.get("kind") == "CustomResourceDefinition":
                reg.add(doc)
        return reg

    def add(self, crd: Mapping[str, Any]) -> None:
        for gvk, schema in served_versions(crd).items():
            self._schemas[gvk] = schema
            self._validators.pop(gvk, None)
            self._rules.pop(gvk, None)
        self._crds[str((crd.get("metadata") or {}).get("name", ""))] = crd
        self._revision += 1

    def documents(self) -> tuple[list[Mapping[str, Any]], tuple[int, int]]:
        """The registered CRDs, and a key that changes whenever they do (the OpenAPI
        documents of :mod:`cloudctl.emulate.kube_openapi` are rebuilt on a new key)."""
        return list(self._crds.values()), (self._serial, self._revision)

    def validate(self, obj: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(dotted path, message) of each problem; :data:`UNKNOWN_FIELD` for undeclared keys."""
        group, _, version = str(obj.get("apiVersion", "")).rpartition("/")
        gvk = (group, version, str(obj.get("kind", "")))
        schema = self._schemas.get(gvk)
        if schema is None:
            return [("apiVersion", f"no CRD serves {gvk[2]} in {obj.get('apiVersion')}")]
        validator = self._validators.get(gvk)
        if validator is None:
            root = _value_schema(schema)
            root.setdefault("properties", {})["metadata"] = _META
            validator = self._validators[gvk] = jsonschema.Draft202012Validator(root)
        problems: set[tuple[str, str]] = set()
        for err in validator.iter_errors(obj):
            leaf = err
            while leaf.context:  # the deepest alternative of anyOf/oneOf is the intended one
                leaf = max(leaf.context, key=lambda e: len(e.absolute_path))
                if len(leaf.absolute_path) <= len(err.absolute_path):
                    leaf = err
                    break
            problems.add((_dotted(leaf.absolute_path), leaf.message))
        unknown: list[tuple[Any, ...]] = []
        _unknown_fields(schema, dict(obj), (), unknown, resource_root=True)
        problems.update((_dotted(p), UNKNOWN_FIELD) for p in unknown)
        return sorted(problems)

    def prune(self, obj: dict[str, Any]) -> None:
        """Remove the fields the object's CRD schema does not declare, as the API server's
        pruning does (a list item loses only its unknown fields; ``status`` is left alone)."""
        group, _, version = str(obj.get("apiVersion", "")).rpartition("/")
        schema = self._schemas.get((group, version, str(obj.get("kind", ""))))
        if schema is None:
            return
        body = {k: v for k, v in obj.items() if k != "status"}
        _unknown_fields(schema, body, (), [], resource_root=True, prune=True)
        for key in [k for k in obj if k != "status" and k not in body]:
            del obj[key]

    def has_rules(self, api_version: str, kind: str) -> bool:
        """Whether the CRD version serving this kind has ``x-kubernetes-validations``."""
        rules = self._rule_set(api_version, kind)
        return rules is not None and not rules.empty

    def rule_problems(
        self, obj: Mapping[str, Any], old: Mapping[str, Any] | None = None
    ) -> list[RuleProblem]:
        """The failed CRD validation rules (CEL, :mod:`cloudctl.emulate.kube_cel`) of an
        object; ``old``: the stored object on an update (``oldSelf``)."""
        rules = self._rule_set(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
        if rules is None or rules.empty:
            return []
        return rules.problems(obj, old)

    def _rule_set(self, api_version: str, kind: str) -> RuleSet | None:
        group, _, version = api_version.rpartition("/")
        gvk = (group, version, kind)
        rules = self._rules.get(gvk)
        if rules is None:
            schema = self._schemas.get(gvk)
            if schema is None:
                return None
            rules = self._rules[gvk] = RuleSet(schema)
        return rules
