"""Object storage of the Kubernetes API emulator: CRUD, server-side apply, patches, validation.

No I/O and no threads: the HTTP layer (``kube_api``) calls these methods under its lock and turns
``ApiError`` into a ``Status`` response. What is kept as the API server keeps it:
``resourceVersion`` (one counter for the whole store; unchanged by a no-op write), ``generation``
(bumped when anything but metadata and status changes), ``uid``, ``creationTimestamp`` and
``managedFields`` per (manager, operation). Custom resources are validated against their CRD's
``openAPIV3Schema`` with the emulator's own checks (:mod:`cloudctl.emulate.schemas`).

Simplifications (documented, not hidden): lists are atomic for field ownership (a strategic
merge patch merges lists by their merge key, :mod:`cloudctl.emulate.kube_strategic`); deletion
is immediate (no finalizers, no graceful deletion); objects of a CRD are stored once and served
under every served version (no conversion); status writes are not schema-validated and carry no
managed fields.

Every committed change is also kept, in order, in a bounded history (``changes_since``): what
watches (:mod:`cloudctl.emulate.kube_watch`) are served from. A watch from a resourceVersion older
than the history answers ``410 Expired`` as the API server does once etcd compacted it.
Deleting a namespace records a DELETED change per object in it; deleting a CRD drops its objects
without (watches of them see nothing more).
Listeners (``add_listener``) are called after every change, besides ``on_write``.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .kube_disruption import pdb_causes
from .kube_fields import (
    MISSING,
    FieldPath,
    PatchError,
    clone,
    delete_path,
    fields_v1,
    get_path,
    json_patch,
    leaf_paths,
    merge_apply,
    merge_patch,
    overlapping,
    overlaps,
    path_text,
)
from .kube_strategic import definition_for, strategic_merge
from .kube_types import BUILTIN_TYPES, ResourceType
from .schemas import UNKNOWN_FIELD, CrdValidators, builtin_unknown_fields, served_versions

__all__ = ["ApiError", "Change", "Managed", "Store", "StoredObject"]

_UNKNOWN_FIELD = UNKNOWN_FIELD  # an undeclared key: pruned or rejected, never "invalid"
_SYSTEM_META = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields")
_OWNABLE_META = ("labels", "annotations", "finalizers", "ownerReferences")
_INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)


class ApiError(Exception):
    """An error response of the API server, rendered as a ``Status`` object."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            out["details"] = self.details
        return out


def _details(rt: ResourceType, name: str, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "kind": rt.plural}
    if rt.group:
        out["group"] = rt.group
    out.update(extra)
    return out


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.group_resource} "{name}" not found', _details(rt, name))


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def invalid(
    rt: ResourceType, name: str, causes: list[tuple[str, str]], reasons: list[str] | None = None
) -> ApiError:
    """422 Invalid, as the API server reports a failed validation: each cause names a field
    (``reasons``: each cause's reason, default FieldValueInvalid)."""
    items = [f"{path}: {msg}" for path, msg in causes]
    why = reasons or ["FieldValueInvalid"] * len(causes)
    joined = items[0] if len(items) == 1 else "[" + ", ".join(items) + "]"
    qualified = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
    return ApiError(
        422,
        "Invalid",
        f'{qualified} "{name}" is invalid: {joined}',
        _details(
            rt,
            name,
            kind=rt.kind,
            causes=[
                {"reason": reason, "message": msg, "field": path}
                for (path, msg), reason in zip(causes, why, strict=True)
            ],
        ),
    )


@dataclass
class Managed:
    api_version: str
    time: str
    fields: set[FieldPath]


ManagerKey = tuple[str, str]  # (manager, "Apply" | "Update")


@dataclass
class StoredObject:
    obj: dict[str, Any]
    managers: dict[ManagerKey, Managed] = field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    """One committed change: ``kind`` ADDED, MODIFIED or DELETED at resourceVersion ``rv`` of
    the object stored under (group, plural) and (namespace, name); ``stored`` is the object
    after the change (for DELETED: its last state, carrying the deletion's resourceVersion),
    ``previous`` before it (None for ADDED). Stored objects are never changed in place."""

    rv: int
    kind: str
    group_resource: tuple[str, str]
    key: tuple[str, str]
    stored: StoredObject
    previous: StoredObject | None


@dataclass(frozen=True)
class WriteResult:
    obj: dict[str, Any]
    created: bool
    warnings: tuple[str, ...] = ()


def _body(obj: Mapping[str, Any], rt: ResourceType) -> dict[str, Any]:
    """What counts for ``generation``: everything but metadata (and status if a subresource)."""
    skip = {"metadata", "apiVersion", "kind"} | ({"status"} if rt.has_status else set())
    return {k: v for k, v in obj.items() if k not in skip}


def ownable_paths(obj: Mapping[str, Any], rt: ResourceType) -> set[FieldPath]:
    body = _body(obj, rt)
    paths = leaf_paths(body)
    meta = obj.get("metadata") or {}
    owned_meta = {k: meta[k] for k in _OWNABLE_META if k in meta}
    if owned_meta:
        paths |= leaf_paths({"metadata": owned_meta})
    return paths


def _same_without_rv(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    ma = {k: v for k, v in (a.get("metadata") or {}).items() if k != "resourceVersion"}
    mb = {k: v for k, v in (b.get("metadata") or {}).items() if k != "resourceVersion"}
    return ma == mb and {k: v for k, v in a.items() if k != "metadata"} == {
        k: v for k, v in b.items() if k != "metadata"
    }


def _gv(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


class Store:
    """All objects of one emulated cluster, keyed by (group, plural) then (namespace, name)."""

    def __init__(
        self,
        *,
        wallclock: Callable[[], dt.datetime] | None = None,
        history: int = 20000,
    ) -> None:
        self._wallclock = wallclock or (lambda: dt.datetime.now(dt.UTC))
        self._history: collections.deque[Change] = collections.deque()
        self.history_size = history
        self._compacted = 0
        """Changes up to this resourceVersion are no longer in the history."""
        self._listeners: list[Callable[[], None]] = []
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._kinds: dict[tuple[str, str, str], ResourceType] = {}
        self._objects: dict[tuple[str, str], dict[tuple[str, str], StoredObject]] = {}
        self._rv = 0
        self._kind_rv: dict[tuple[str, str], int] = {}
        self.on_write: Callable[[], None] | None = None
        """Called after every change (from whichever thread made it): the rack wakes up."""
        self.crds = CrdValidators()
        self._established: dict[str, dict[str, Any]] = {}  # CRD name -> spec registered
        for rt in BUILTIN_TYPES:
            self._add_type(rt)
        ns_type = self.type_of("v1", "Namespace")
        assert ns_type is not None
        for ns in _INITIAL_NAMESPACES:
            self.create(
                ns_type,
                None,
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
                manager="kube-apiserver",
            )

    # ------------------------------------------------------------------ types

    def _add_type(self, rt: ResourceType) -> None:
        self._types[(rt.group, rt.version, rt.plural)] = rt
        self._kinds[(rt.group, rt.version, rt.kind)] = rt
        self._objects.setdefault((rt.group, rt.plural), {})

    def resource_type(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def type_of(self, api_version: str, kind: str) -> ResourceType | None:
        group, version = _gv(api_version)
        return self._kinds.get((group, version, kind))

    def types(self) -> list[ResourceType]:
        return list(self._types.values())

    def register_crd(self, crd: Mapping[str, Any]) -> None:
        """Serve a CRD's versions (called when it becomes Established)."""
        name = crd["metadata"]["name"]
        self.unregister_crd(name, keep_objects=True)
        spec = crd["spec"]
        names = spec["names"]
        has_subresources = {
            v["name"]: "status" in (v.get("subresources") or {}) for v in spec["versions"]
        }
        for group, version, kind in served_versions(crd):
            self._add_type(
                ResourceType(
                    group=group,
                    version=version,
                    kind=kind,
                    plural=names["plural"],
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                    has_status=has_subresources.get(version, False),
                    short_names=tuple(names.get("shortNames") or ()),
                    crd=name,
                )
            )
        self.crds.add(crd)
        self._established[name] = clone(dict(crd))

    def unregister_crd(self, name: str, *, keep_objects: bool = False) -> None:
        if name not in self._established:
            return
        del self._established[name]
        for key, rt in list(self._types.items()):
            if rt.crd == name:
                del self._types[key]
                self._kinds.pop((rt.group, rt.version, rt.kind), None)
                if not keep_objects:
                    self._objects.pop((rt.group, rt.plural), None)
        self.crds = CrdValidators.from_documents(self._established.values())

    def is_established(self, name: str) -> bool:
        return name in self._established

    def printer_columns(self, rt: ResourceType) -> list[dict[str, Any]] | None:
        """A custom resource version's ``additionalPrinterColumns`` (empty: none declared);
        None for a built-in kind."""
        crd = self._established.get(rt.crd or "")
        if crd is None:
            return None
        for version in (crd.get("spec") or {}).get("versions") or []:
            if version.get("name") == rt.version:
                return list(version.get("additionalPrinterColumns") or [])
        return []

    # ------------------------------------------------------------------ reading

    def _bucket(self, rt: ResourceType) -> dict[tuple[str, str], StoredObject]:
        return self._objects.setdefault((rt.group, rt.plural), {})

    def _key(self, rt: ResourceType, namespace: str | None, name: str) -> tuple[str, str]:
        return (namespace or "" if rt.namespaced else "", name)

    def lookup(self, rt: ResourceType, namespace: str | None, name: str) -> StoredObject | None:
        return self._bucket(rt).get(self._key(rt, namespace, name))

    def iter_stored(self, rt: ResourceType) -> Iterator[StoredObject]:
        yield from list(self._bucket(rt).values())

    @property
    def resource_version(self) -> str:
        return str(self._rv)

    @property
    def revision(self) -> int:
        """The current resourceVersion as a number."""
        return self._rv

    def kind_revision(self, group: str, kind: str) -> int:
        """The resourceVersion of the last change to an object of this kind (0: none yet)."""
        return self._kind_rv.get((group, kind), 0)

    @property
    def compacted(self) -> int:
        """The newest resourceVersion whose change is no longer kept: a watch must start at or
        after it."""
        return self._compacted

    def changes_since(self, rv: int) -> list[Change]:
        """The changes after resourceVersion ``rv`` (``rv >= compacted``), oldest first."""
        out: list[Change] = []
        for change in reversed(self._history):
            if change.rv <= rv:
                break
            out.append(change)
        out.reverse()
        return out

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every change (from the thread that made it)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _record(
        self,
        rt: ResourceType,
        kind: str,
        key: tuple[str, str],
        stored: StoredObject,
        previous: StoredObject | None,
    ) -> None:
        self._kind_rv[(rt.group, rt.kind)] = self._rv
        self._history.append(Change(self._rv, kind, (rt.group, rt.plural), key, stored, previous))
        while len(self._history) > self.history_size:
            self._compacted = self._history.popleft().rv

    def render(self, rt: ResourceType, stored: StoredObject) -> dict[str, Any]:
        """The object as the API returns it (``apiVersion`` of the request, managedFields)."""
        out = clone(stored.obj)
        out["apiVersion"] = rt.api_version
        out["kind"] = rt.kind
        if stored.managers:
            out["metadata"]["managedFields"] = [
                {
                    "manager": manager,
                    "operation": operation,
                    "apiVersion": m.api_version,
                    "time": m.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": fields_v1(m.fields),
                }
                for (manager, operation), m in sorted(stored.managers.items())
            ]
        return out

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        stored = self.lookup(rt, namespace, name)
        if stored is None:
            raise not_found(rt, name)
        return self.render(rt, stored)

    def list(
        self,
        rt: ResourceType,
        namespace: str | None,
        predicate: Callable[[Mapping[str, Any]], bool] = lambda _o: True,
    ) -> dict[str, Any]:
        items = []
        for (ns, _name), stored in sorted(self._bucket(rt).items()):
            if rt.namespaced and namespace and ns != namespace:
                continue
            if predicate(stored.obj):
                items.append(self.render(rt, stored))
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": self.resource_version},
            "items": items,
        }

    # ------------------------------------------------------------------ checks

    def _now(self) -> str:
        return self._wallclock().strftime("%Y-%m-%dT%H:%M:%SZ")

    def _check_identity(
        self,
        rt: ResourceType,
        namespace: str | None,
        body: Any,
        url_name: str | None,
    ) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise bad_request("the body of the request is not an object")
        # like the API server's decoder: a body without apiVersion/kind takes the endpoint's
        api_version = body.setdefault("apiVersion", rt.api_version)
        kind = body.setdefault("kind", rt.kind)
        if kind != rt.kind or _gv(str(api_version))[0] != rt.group:
            raise bad_request(
                f"the API version in the data ({api_version}) and kind ({kind}) do not match the "
                f"expected API version ({rt.api_version}) and kind ({rt.kind})"
            )
        meta = body.get("metadata")
        if meta is None:
            meta = body["metadata"] = {}
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if url_name is not None and meta.get("name") not in (None, url_name):
            raise bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the "
                f"URL ({url_name})"
            )
        if rt.namespaced and meta.get("namespace") not in (None, namespace):
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
        return meta

    def _check_namespace(self, rt: ResourceType, namespace: str | None) -> None:
        if not rt.namespaced:
            return
        ns_type = self.type_of("v1", "Namespace")
        assert ns_type is not None
        if not namespace or self.lookup(ns_type, None, namespace) is None:
            raise ApiError(
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                {"name": namespace or "", "kind": "namespaces"},
            )

    def _validate(
        self, rt: ResourceType, obj: dict[str, Any], field_validation: str
    ) -> tuple[str, ...]:
        """Raise 422/400 for an invalid object; prune unknown fields unless Strict."""
        name = obj["metadata"].get("name", "")
        if rt.group != "rbac.authorization.k8s.io" and (
            len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name)
        ):
            raise invalid(
                rt,
                name,
                [
                    (
                        "metadata.name",
                        f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist '
                        "of lower case alphanumeric characters, '-' or '.', and must start and "
                        "end with an alphanumeric character",
                    )
                ],
            )
        if rt.crd is not None:
            return self._validate_custom(rt, obj, field_validation)
        # as the server's strict decoding: fields the upstream OpenAPI schema does not declare
        unknown = builtin_unknown_fields(rt.api_version, rt.kind, obj,
                                         prune=field_validation != "Strict")
        warnings = self._unknown_fields(rt, name, obj, unknown, field_validation, pruned=True)
        check = _BUILTIN_CHECKS.get(rt.kind)
        if check is not None:
            causes = check(obj)
            if causes:
                raise invalid(rt, name, causes)
        return warnings

    def _validate_custom(
        self, rt: ResourceType, obj: dict[str, Any], field_validation: str
    ) -> tuple[str, ...]:
        name = obj["metadata"].get("name", "")
        probe = {k: v for k, v in obj.items() if k != "status"}
        probe["apiVersion"] = rt.api_version
        problems = self.crds.validate(probe)
        unknown = [path for path, message in problems if message == _UNKNOWN_FIELD]
        wrong = [(path, message) for path, message in problems if message != _UNKNOWN_FIELD]
        failed = []
        if self.crds.has_rules(rt.api_version, rt.kind):  # CEL: oldSelf is the stored object
            stored = self.lookup(rt, obj["metadata"].get("namespace"), name) if name else None
            failed = self.crds.rule_problems(probe, None if stored is None else stored.obj)
        if wrong or failed:
            raise invalid(
                rt,
                name,
                [(path, f"Invalid value: {msg}") for path, msg in wrong]
                + [(p.path, p.detail) for p in failed],
                ["FieldValueInvalid"] * len(wrong) + [p.reason for p in failed],
            )
        if unknown and field_validation != "Strict":
            self.crds.prune(obj)  # list items keep their other fields
        return self._unknown_fields(rt, name, obj, unknown, field_validation, pruned=True)

    def _unknown_fields(
        self, rt: ResourceType, name: str, obj: dict[str, Any], unknown: Sequence[str],
        field_validation: str, *, pruned: bool = False,
    ) -> tuple[str, ...]:
        """Strict: 400 naming every undeclared field; else prune them (Warn: warnings)."""
        if not unknown:
            return ()
        if field_validation == "Strict":
            fields = ", ".join(f'unknown field "{p}"' for p in unknown)
            raise ApiError(
                400,
                "BadRequest",
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                f"strict decoding error: {fields}",
                _details(
                    rt,
                    name,
                    kind=rt.kind,
                    causes=[
                        {"reason": "FieldValueInvalid", "message": _UNKNOWN_FIELD, "field": p}
                        for p in unknown
                    ],
                ),
            )
        if not pruned:
            for p in unknown:
                delete_path(obj, _parse_field(p))
        if field_validation == "Ignore":
            return ()
        return tuple(f'unknown field "{p}"' for p in unknown)

    # ------------------------------------------------------------------ writing

    def _commit(
        self,
        rt: ResourceType,
        key: tuple[str, str],
        new: dict[str, Any],
        managers: dict[ManagerKey, Managed],
        old: StoredObject | None,
        dry_run: bool,
    ) -> tuple[StoredObject, bool]:
        """Store ``new`` unless nothing changed; returns (stored, changed)."""
        managers = {k: m for k, m in managers.items() if m.fields}
        if old is not None:
            same_fields = {k: m.fields for k, m in managers.items()} == {
                k: m.fields for k, m in old.managers.items()
            }
            if same_fields and _same_without_rv(new, old.obj):
                return old, False
            now = self._now()
            for k, m in managers.items():
                prev = old.managers.get(k)
                if prev is None or prev.fields != m.fields:
                    m.time = now
            if _body(new, rt) != _body(old.obj, rt) and "generation" in old.obj["metadata"]:
                new["metadata"]["generation"] = old.obj["metadata"]["generation"] + 1
        stored = StoredObject(new, managers)
        if dry_run:
            return stored, True
        self._rv += 1
        new["metadata"]["resourceVersion"] = str(self._rv)
        self._bucket(rt)[key] = stored
        self._record(rt, "ADDED" if old is None else "MODIFIED", key, stored, old)
        self._written()
        return stored, True

    def _written(self) -> None:
        if self.on_write is not None:
            self.on_write()
        for listener in list(self._listeners):
            listener()

    def _deleted(self, rt: ResourceType, key: tuple[str, str], stored: StoredObject) -> None:
        """Remove one object: a change of its own resourceVersion."""
        del self._bucket(rt)[key]
        self._rv += 1
        last = clone(stored.obj)
        last["metadata"]["resourceVersion"] = str(self._rv)
        self._record(rt, "DELETED", key, StoredObject(last, stored.managers), stored)

    def _fresh_metadata(
        self, rt: ResourceType, namespace: str | None, meta: dict[str, Any]
    ) -> None:
        for k in _SYSTEM_META:
            meta.pop(k, None)
        if rt.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = self._now()
        if rt.has_status or rt.crd is not None:
            meta["generation"] = 1

    def _initial_status(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        if rt.kind == "Namespace":
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["status"] = {"phase": "Active"}

    def create(
        self,
        rt: ResourceType,
        namespace: str | None,
        body: Any,
        *,
        manager: str,
        dry_run: bool = False,
        field_validation: str = "Warn",
    ) -> WriteResult:
        body = clone(body)
        meta = self._check_identity(rt, namespace, body, None)
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise invalid(
                    rt, "", [("metadata.name", "Required value: name or generateName is required")]
                )
            meta["name"] = f"{prefix}{uuid.uuid4().hex[:5]}"
        name = meta["name"]
        self._check_namespace(rt, namespace)
        key = self._key(rt, namespace, name)
        if key in self._bucket(rt):
            raise ApiError(
                409,
                "AlreadyExists",
                f'{rt.group_resource} "{name}" already exists',
                _details(rt, name),
            )
        self._fresh_metadata(rt, namespace, meta)
        if rt.has_status:
            body.pop("status", None)
        warnings = self._validate(rt, body, field_validation)
        body["apiVersion"], body["kind"] = rt.api_version, rt.kind
        owned = ownable_paths(body, rt)
        self._initial_status(rt, body)  # server-set fields: owned by nobody
        managers = {(manager, "Update"): Managed(rt.api_version, self._now(), owned)}
        stored, _ = self._commit(rt, key, body, managers, None, dry_run)
        return WriteResult(self.render(rt, stored), True, warnings)

    def _existing(self, rt: ResourceType, namespace: str | None, name: str) -> StoredObject:
        stored = self.lookup(rt, namespace, name)
        if stored is None:
            raise not_found(rt, name)
        return stored

    def _update_owners(
        self,
        rt: ResourceType,
        old: StoredObject,
        new: dict[str, Any],
        manager: str,
    ) -> dict[ManagerKey, Managed]:
        """Ownership after an Update-type write: ``manager`` takes the fields it changed."""
        new_paths = ownable_paths(new, rt)
        changed = {p for p in new_paths if get_path(old.obj, p) != get_path(new, p)}
        index = overlapping(changed)
        me = (manager, "Update")
        out: dict[ManagerKey, Managed] = {}
        for k, m in old.managers.items():
            kept = {
                q
                for q in m.fields
                if get_path(new, q) is not MISSING and (k == me or not overlaps(q, index))
            }
            out[k] = Managed(m.api_version, m.time, kept)
        if changed:
            mine = out.setdefault(me, Managed(rt.api_version, self._now(), set()))
            mine.fields = mine.fields | changed
        return out

    def _restore_system(self, old: dict[str, Any], new: dict[str, Any], rt: ResourceType) -> None:
        meta = new.setdefault("metadata", {})
        for k in ("name", "namespace", "uid", "creationTimestamp", "generation", "resourceVersion"):
            if k in old["metadata"]:
                meta[k] = old["metadata"][k]
            else:
                meta.pop(k, None)
        meta.pop("managedFields", None)
        new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]

    def replace(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        manager: str,
        subresource: str | None = None,
        dry_run: bool = False,
        field_validation: str = "Warn",
    ) -> WriteResult:
        body = clone(body)
        meta = self._check_identity(rt, namespace, body, name)
        old = self._existing(rt, namespace, name)
        rv = meta.get("resourceVersion")
        if rv and rv != old.obj["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rt.group_resource} "{name}": the object has '
                "been modified; please apply your changes to the latest version and try again",
                _details(rt, name),
            )
        if subresource == "status":
            new = clone(old.obj)
            if "status" in body:
                new["status"] = body["status"]
            else:
                new.pop("status", None)
        else:
            new = body
            if rt.has_status:
                new.pop("status", None)
                if "status" in old.obj:
                    new["status"] = clone(old.obj["status"])
        self._restore_system(old.obj, new, rt)
        warnings = self._validate(rt, new, field_validation) if subresource is None else ()
        managers = self._update_owners(rt, old, new, manager)
        stored, _ = self._commit(rt, self._key(rt, namespace, name), new, managers, old, dry_run)
        return WriteResult(self.render(rt, stored), False, warnings)

    def patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        patch_type: str,
        body: Any,
        *,
        manager: str | None,
        force: bool = False,
        subresource: str | None = None,
        dry_run: bool = False,
        field_validation: str = "Warn",
    ) -> WriteResult:
        if patch_type == "apply":
            if not manager:
                raise bad_request("fieldManager is required for apply requests")
            if subresource is not None:
                raise bad_request("apply to a subresource is not supported by the emulator")
            return self.apply(
                rt,
                namespace,
                name,
                body,
                manager=manager,
                force=force,
                dry_run=dry_run,
                field_validation=field_validation,
            )
        old = self._existing(rt, namespace, name)
        rewritten: dict[ManagerKey, Managed] | None = None
        try:
            if patch_type == "json":
                if not isinstance(body, list):
                    raise PatchError("a JSON patch must be a list of operations")
                shown = self.render(rt, old)  # managedFields can be patched, as on a server
                new = json_patch(shown, body)
                written = (new.get("metadata") or {}).get("managedFields", MISSING)
                if written != shown["metadata"].get("managedFields", MISSING):
                    rewritten = _managers_from(written)
            else:
                if not isinstance(body, dict):
                    raise PatchError("a merge patch must be an object")
                new = (strategic_merge(old.obj, body, definition_for(rt.api_version, rt.kind))
                       if patch_type == "strategic" else merge_patch(old.obj, body))
        except (PatchError, ValueError, IndexError, TypeError) as exc:
            raise ApiError(422, "Invalid", f"the patch could not be applied: {exc}") from exc
        if subresource == "status":
            status = new.get("status")
            new = clone(old.obj)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
        elif rt.has_status:
            if "status" in old.obj:
                new["status"] = clone(old.obj["status"])
            else:
                new.pop("status", None)
        self._restore_system(old.obj, new, rt)
        warnings = self._validate(rt, new, field_validation) if subresource is None else ()
        managers = (self._update_owners(rt, old, new, manager or "unknown") if rewritten is None
                    else rewritten)
        stored, _ = self._commit(rt, self._key(rt, namespace, name), new, managers, old, dry_run)
        return WriteResult(self.render(rt, stored), False, warnings)

    def apply(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        manager: str,
        force: bool,
        dry_run: bool = False,
        field_validation: str = "Warn",
    ) -> WriteResult:
        """Server-side apply: create, or merge the applied configuration of ``manager``."""
        body = clone(body)
        meta = self._check_identity(rt, namespace, body, name)
        meta["name"] = name
        for k in _SYSTEM_META:
            meta.pop(k, None)
        if rt.has_status:
            body.pop("status", None)
        me = (manager, "Apply")
        key = self._key(rt, namespace, name)
        old = self._bucket(rt).get(key)
        if old is None:
            self._check_namespace(rt, namespace)
            self._fresh_metadata(rt, namespace, meta)
            warnings = self._validate(rt, body, field_validation)
            body["apiVersion"], body["kind"] = rt.api_version, rt.kind
            owned = ownable_paths(body, rt)
            self._initial_status(rt, body)  # server-set fields: owned by nobody
            managers: dict[ManagerKey, Managed] = {me: Managed(rt.api_version, self._now(), owned)}
            stored, _ = self._commit(rt, key, body, managers, None, dry_run)
            return WriteResult(self.render(rt, stored), True, warnings)

        applied_fields = ownable_paths(body, rt)
        others = {mk: m for mk, m in old.managers.items() if mk != me}
        others_index = overlapping(q for m in others.values() for q in m.fields)
        new = clone(old.obj)
        previous = old.managers[me].fields if me in old.managers else set()
        for p in sorted(previous - applied_fields, key=len, reverse=True):
            if not overlaps(p, others_index):
                delete_path(new, p)
        applied_meta = {k: meta[k] for k in _OWNABLE_META if k in meta}
        merge_apply(
            new, {k: v for k, v in body.items() if k not in ("metadata", "apiVersion", "kind")}
        )
        merge_apply(new["metadata"], applied_meta)
        warnings = self._validate(rt, new, field_validation)
        applied_fields = {p for p in applied_fields if get_path(new, p) is not MISSING}

        conflicts: list[tuple[ManagerKey, FieldPath]] = []
        for mk, m in others.items():
            for q in m.fields:
                if get_path(new, q) != get_path(old.obj, q):
                    conflicts.append((mk, q))
        if conflicts and not force and me[0] == "kubectl":
            # the API server's lastAppliedManager: kubectl's server-side apply takes over, without
            # conflicts, the fields its client-side apply set (last-applied-configuration)
            allowed = _last_applied_paths(old.obj, rt)
            force = all(q in allowed for _, q in conflicts)
        if conflicts and not force:
            raise _conflict(rt, name, conflicts)
        managers = {}
        lost: dict[ManagerKey, set[FieldPath]] = {}
        for mk, q in conflicts:
            lost.setdefault(mk, set()).add(q)
        for mk, m in others.items():
            managers[mk] = Managed(m.api_version, m.time, m.fields - lost.get(mk, set()))
        prev_time = old.managers[me].time if me in old.managers else self._now()
        managers[me] = Managed(rt.api_version, prev_time, applied_fields)
        stored, _ = self._commit(rt, key, new, managers, old, dry_run)
        return WriteResult(self.render(rt, stored), False, warnings)

    def set_status(
        self, rt: ResourceType, namespace: str | None, name: str, status: dict[str, Any]
    ) -> bool:
        """A controller writes an object's status; returns whether anything changed."""
        stored = self.lookup(rt, namespace, name)
        if stored is None or stored.obj.get("status") == status:
            return False
        new = clone(stored.obj)
        new["status"] = clone(status)
        self._commit(rt, self._key(rt, namespace, name), new, dict(stored.managers), stored, False)
        return True

    def delete(
        self, rt: ResourceType, namespace: str | None, name: str, *, dry_run: bool = False
    ) -> dict[str, Any]:
        stored = self._existing(rt, namespace, name)
        rendered = self.render(rt, stored)
        if dry_run:
            return rendered
        self._deleted(rt, self._key(rt, namespace, name), stored)
        if rt.kind == "Namespace":
            for (group, plural), bucket in self._objects.items():
                member = next((t for t in self._types.values()
                               if (t.group, t.plural) == (group, plural)), None)
                for key in [k for k in bucket if k[0] == name]:
                    if member is None:
                        del bucket[key]
                    else:
                        self._deleted(member, key, bucket[key])
            self._written()
            rendered["status"] = {"phase": "Terminating"}
            return rendered
        self._written()
        if rt.kind == "CustomResourceDefinition":
            self.unregister_crd(name)
            return rendered
        if rt.crd is not None:
            return rendered
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": _details(rt, name, uid=stored.obj["metadata"].get("uid")),
        }


def _fields_v1_paths(tree: Mapping[str, Any], prefix: FieldPath = ()) -> set[FieldPath]:
    """The owned paths of a ``fieldsV1`` tree (list element keys own their whole list here)."""
    out: set[FieldPath] = set()
    for key, sub in tree.items():
        if not key.startswith("f:"):  # ".", "k:{...}", "v:...", "i:N"
            if prefix:
                out.add(prefix)
            continue
        path = (*prefix, key[2:])
        if isinstance(sub, Mapping) and sub:
            out |= _fields_v1_paths(sub, path)
        else:
            out.add(path)
    return out


def _managers_from(entries: Any) -> dict[ManagerKey, Managed]:
    """``metadata.managedFields`` written by a client (kubectl's client-side to server-side
    apply migration) as the store's managers; a malformed list is a 422."""
    if entries is MISSING or entries is None:
        return {}
    if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
        raise PatchError("metadata.managedFields must be a list of ManagedFieldsEntry")
    out: dict[ManagerKey, Managed] = {}
    for e in entries:
        fields = e.get("fieldsV1") or {}
        if not isinstance(fields, Mapping):
            raise PatchError("metadata.managedFields[].fieldsV1 must be an object")
        key = (str(e.get("manager", "")), str(e.get("operation", "Update")))
        out[key] = Managed(str(e.get("apiVersion", "")), str(e.get("time", "")),
                           _fields_v1_paths(fields))
    return out


def _last_applied_paths(obj: Mapping[str, Any], rt: ResourceType) -> set[FieldPath]:
    text = ((obj.get("metadata") or {}).get("annotations") or {}).get(
        "kubectl.kubernetes.io/last-applied-configuration")
    try:
        applied = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return set()
    return ownable_paths(applied, rt) if isinstance(applied, dict) else set()


def _conflict(
    rt: ResourceType, name: str, conflicts: list[tuple[ManagerKey, FieldPath]]
) -> ApiError:
    lines = [f'conflict with "{k[0]}": {path_text(q)}' for k, q in sorted(conflicts)]
    head = f"Apply failed with {len(lines)} conflict{'s' if len(lines) != 1 else ''}: "
    return ApiError(
        409,
        "Conflict",
        head + "\n".join(lines) if len(lines) > 1 else head + lines[0],
        _details(
            rt,
            name,
            causes=[
                {
                    "reason": "FieldManagerConflict",
                    "message": f'conflict with "{k[0]}"',
                    "field": path_text(q),
                }
                for k, q in sorted(conflicts)
            ],
        ),
    )


def _parse_field(text: str) -> FieldPath:
    """``spec.foo[0].bar`` (cloudctl.contracts notation) -> ("spec", "foo") up to the first index.

    Unknown keys inside a list item are pruned with their whole list (lists are atomic here).
    """
    head = text.split("[", 1)[0]
    return tuple(p for p in head.split(".") if p)


# --------------------------------------------------------------------------- built-in checks


def _workload_causes(obj: Mapping[str, Any]) -> list[tuple[str, str]]:
    spec = obj.get("spec") or {}
    causes: list[tuple[str, str]] = []
    selector = spec.get("selector")
    if not isinstance(selector, dict) or not (
        selector.get("matchLabels") or selector.get("matchExpressions")
    ):
        causes.append(("spec.selector", "Required value"))
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if isinstance(selector, dict):
        for k, v in (selector.get("matchLabels") or {}).items():
            if template_labels.get(k) != v:
                causes.append(
                    (
                        "spec.template.metadata.labels",
                        f"Invalid value: {template_labels!r}: `selector` does not match "
                        "template `labels`",
                    )
                )
                break
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers")
    if not containers:
        causes.append(("spec.template.spec.containers", "Required value"))
    return causes


def _crd_causes(obj: Mapping[str, Any]) -> list[tuple[str, str]]:
    spec = obj.get("spec") or {}
    names = spec.get("names") or {}
    causes: list[tuple[str, str]] = []
    for key in ("plural", "kind"):
        if not names.get(key):
            causes.append((f"spec.names.{key}", "Required value"))
    if not spec.get("group"):
        causes.append(("spec.group", "Required value"))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        causes.append(("spec.scope", f"Unsupported value: {spec.get('scope')!r}"))
    versions = spec.get("versions") or []
    if not versions:
        causes.append(("spec.versions", "Required value"))
    elif sum(1 for v in versions if v.get("storage")) != 1:
        causes.append(
            (
                "spec.versions",
                "Invalid value: must have exactly one version marked as storage version",
            )
        )
    expected = f"{names.get('plural')}.{spec.get('group')}"
    name = (obj.get("metadata") or {}).get("name")
    if names.get("plural") and spec.get("group") and name != expected:
        causes.append(
            ("metadata.name", f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group')
        )
    return causes


_BUILTIN_CHECKS: dict[str, Callable[[Mapping[str, Any]], list[tuple[str, str]]]] = {
    "Deployment": _workload_causes,
    "DaemonSet": _workload_causes,
    "StatefulSet": _workload_causes,
    "CustomResourceDefinition": _crd_causes,
    "PodDisruptionBudget": pdb_causes,
}
