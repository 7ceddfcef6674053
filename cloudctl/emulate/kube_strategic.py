"""Strategic merge patch (``application/strategic-merge-patch+json``) of built-in objects, as
apimachinery's ``strategicpatch`` applies it, driven by the upstream OpenAPI v2 definitions
(``x-kubernetes-patch-strategy`` and ``x-kubernetes-patch-merge-key``):

- maps merge recursively; ``null`` deletes a key;
- a list whose strategy includes ``merge`` merges by its merge key (items matched by key are
  merged, new ones appended, ``{"$patch": "delete", <key>: ...}`` removes one), a list of
  scalars with ``merge`` is a set union; other lists are replaced;
- the directives ``$patch`` (``replace``, ``delete``, ``merge``), ``$retainKeys``,
  ``$setElementOrder/<list>`` and ``$deleteFromPrimitiveList/<list>`` (what ``kubectl apply``
  and ``kubectl patch`` send) are obeyed and never stored.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from typing import Any

__all__ = ["StrategicPatchError", "definition_for", "strategic_merge"]

_ORDER = "$setElementOrder/"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"
_EMPTY: Mapping[str, Any] = {}


class StrategicPatchError(ValueError):
    """A patch the strategic merge cannot apply (an unknown ``$patch`` directive ...)."""


def _definitions() -> Mapping[str, Any]:
    from .kube_openapi import swagger_definitions

    return swagger_definitions()


def _resolve(schema: Mapping[str, Any] | None) -> Mapping[str, Any]:
    schema = schema or _EMPTY
    while "$ref" in schema:
        schema = _definitions().get(str(schema["$ref"]).rsplit("/", 1)[-1]) or _EMPTY
    return schema


@functools.cache
def definition_for(api_version: str, kind: str) -> Mapping[str, Any]:
    """The upstream definition of a built-in kind ({} when there is none: plain merge)."""
    group, _, version = api_version.rpartition("/")
    for definition in _definitions().values():
        for gvk in definition.get("x-kubernetes-group-version-kind") or []:
            if (gvk.get("group", ""), gvk.get("version"), gvk.get("kind")) == (
                    group, version, kind) and len(definition[
                        "x-kubernetes-group-version-kind"]) == 1:
                return definition  # type: ignore[no-any-return]
    return _EMPTY


def _property(schema: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    schema = _resolve(schema)
    props = schema.get("properties") or {}
    if key in props:
        return props[key]  # type: ignore[no-any-return]
    extra = schema.get("additionalProperties")
    return extra if isinstance(extra, Mapping) else _EMPTY


def _clean(value: Any) -> Any:
    """A patch value added where nothing was: directives and nulls removed."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()
                if v is not None and not k.startswith("$")}
    if isinstance(value, list):
        return [_clean(v) for v in value
                if not (isinstance(v, dict) and v.get("$patch") == "delete")]
    return value


def strategic_merge(original: Any, patch: Any, schema: Mapping[str, Any]) -> Any:
    """``original`` with ``patch`` applied (neither is modified)."""
    return _merge_map(copy.deepcopy(original) if isinstance(original, dict) else {},
                      patch, schema)


def _merge_map(original: dict[str, Any], patch: Mapping[str, Any],
               schema: Mapping[str, Any]) -> Any:
    if not isinstance(patch, Mapping):
        raise StrategicPatchError("a strategic merge patch must be an object")
    directive = patch.get("$patch")
    if directive == "replace":
        return _clean({k: v for k, v in patch.items() if k != "$patch"})
    if directive == "delete":
        return None
    if directive not in (None, "merge"):
        raise StrategicPatchError(f"unknown patch type: {directive}")
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith(_ORDER):
            orders[key[len(_ORDER):]] = list(value or [])
            continue
        if key.startswith(_DELETE_PRIMITIVE):
            name = key[len(_DELETE_PRIMITIVE):]
            if isinstance(original.get(name), list):
                original[name] = [v for v in original[name] if v not in (value or [])]
            continue
        if value is None:
            original.pop(key, None)
            continue
        sub = _property(schema, key)
        current = original.get(key)
        if isinstance(value, Mapping) and isinstance(current, dict):
            merged = _merge_map(current, value, sub)
            if merged is None:
                original.pop(key, None)
            else:
                original[key] = merged
        elif isinstance(value, list) and "merge" in str(
                _resolve(sub).get("x-kubernetes-patch-strategy") or ""):
            original[key] = _merge_list(current if isinstance(current, list) else [], value,
                                        _resolve(sub))
        elif isinstance(value, Mapping) and value.get("$patch") == "delete":
            original.pop(key, None)
        else:
            original[key] = _clean(value)
    for name, order in orders.items():
        if isinstance(original.get(name), list):
            original[name] = _ordered(original[name], order,
                                      _resolve(_property(schema, name)))
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        for key in list(original):
            if key not in retain:
                del original[key]
    return original


def _merge_list(original: list[Any], patch: list[Any], schema: Mapping[str, Any]) -> list[Any]:
    key = schema.get("x-kubernetes-patch-merge-key")
    items = schema.get("items") or _EMPTY
    if not key:  # scalars: a set union in the patch's order after the original's
        out = list(original)
        out += [v for v in patch if v not in out]
        return out
    out = [copy.deepcopy(v) for v in original]
    for item in patch:
        if not isinstance(item, Mapping):
            raise StrategicPatchError(f"list items merged by {key!r} must be objects")
        if item.get("$patch") == "delete":
            out = [v for v in out if not (isinstance(v, dict) and v.get(key) == item.get(key))]
            continue
        if item.get("$patch") == "replace":
            return [_clean(v) for v in patch if isinstance(v, Mapping)
                    and v.get("$patch") != "replace"]
        match = next((i for i, v in enumerate(out)
                      if isinstance(v, dict) and key in item and v.get(key) == item.get(key)),
                     None)
        if match is None:
            out.append(_clean(dict(item)))
        else:
            out[match] = _merge_map(out[match], item, items)
    return out


def _ordered(values: list[Any], order: list[Any], schema: Mapping[str, Any]) -> list[Any]:
    key = schema.get("x-kubernetes-patch-merge-key")

    def ident(v: Any) -> Any:
        return v.get(key) if key and isinstance(v, dict) else v

    wanted = [ident(o) for o in order]
    rank = {w: i for i, w in enumerate(wanted) if isinstance(w, (str, int, float, bool))}
    listed = [v for v in values if ident(v) in rank]
    rest = [v for v in values if ident(v) not in rank]
    listed.sort(key=lambda v: rank[ident(v)])
    return listed + rest
