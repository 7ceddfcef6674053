"""Kubernetes API emulator: the REST subset the official ``kubernetes`` client uses, over TLS.

Two layers:

- ``KubeApi.handle(method, target, headers, body) -> Response`` is the sans-IO core: routing,
  discovery documents, request decoding and ``Status`` errors, over ``kube_store.Store``; every
  request first runs one reconcile pass of ``kube_reconcile.Controllers`` at the current time.
- ``KubeApiEmulator`` serves it on 127.0.0.1 (port 0 by default) from a thread with real TLS
  (a fresh CA, a server certificate for the address, an admin client certificate required by
  default) and hands out a kubeconfig the official client loads unmodified. Tests and the Talos
  rack emulator drive it with ``add_node``, ``fail_release`` and ``set_release_delay``; drains
  and storage gates with ``set_pod_ready`` (a running pod turns unhealthy), ``pods_on``,
  ``guard_node`` (a pod pinned to a node under a ``maxUnavailable: 0`` budget),
  ``start_linstor``, ``add_storage_resource``, ``set_disk_state`` and ``degrade_storage``.

``kubectl get`` receives server-side printed Tables (:mod:`cloudctl.emulate.kube_tables`: the
built-in printers and CRD ``additionalPrinterColumns``). ``watch=1`` on a list answers a
``Response`` carrying a :class:`cloudctl.emulate.kube_watch.Watch` instead of a body: the server
thread streams its events (chunked, one JSON event per line), sleeping until the store changes
(``Store.add_listener``), a controller's timed transition or the watch's next bookmark or timeout
falls due, and running the reconcile pass a change calls for; ``stop()`` ends open watches
first. Lists honour ``resourceVersion``/``resourceVersionMatch`` and page with
``limit``/``continue`` (``remainingItemCount``); field selectors are those the API server
supports per kind (:mod:`cloudctl.emulate.kube_types`). The controllers record Events
(:mod:`cloudctl.emulate.kube_events`). ``SelfSubjectReview``, ``SelfSubjectAccessReview`` and
``SelfSubjectRulesReview`` answer for the user of the client certificate
(:mod:`cloudctl.emulate.kube_auth`; authorization is not enforced on other requests).
Subresources served besides ``status``: ``scale`` of Deployments, StatefulSets and
ReplicaSets (autoscaling/v1, ``kubectl scale``), ``pods/eviction`` (policy/v1 Eviction with
PodDisruptionBudget semantics, :mod:`cloudctl.emulate.kube_disruption`) and ``services/proxy``
(GET, to the emulated LINSTOR controller only: :mod:`cloudctl.emulate.linstor_view`; any
other Service answers 503 "no endpoints available", as a Service without ready endpoints
does).

Real kubectl and helm run in their default modes. ``/openapi/v3`` and ``/openapi/v2``
(:mod:`cloudctl.emulate.kube_openapi`) serve the vendored upstream v1.35 documents and the
registered CRDs' schemas (v2 also in the gnostic protobuf encoding client-go asks for):
``kubectl apply`` sees ``fieldValidation`` on the PATCH operations and leaves validation to the
server, ``kubectl explain`` reads the component schemas. Built-in objects are checked against
the upstream definitions (unknown fields: 400 under ``fieldValidation=Strict``, pruned with a
Warning under Warn; :mod:`cloudctl.emulate.schemas`; keys a JSON body repeats likewise),
strategic merge patches follow their patch strategies (:mod:`cloudctl.emulate.kube_strategic`),
custom resources their CRD's structural schema and CEL rules (:mod:`cloudctl.emulate.kube_cel`).
Request bodies may be ``application/vnd.kubernetes.protobuf`` (built-in types,
:mod:`cloudctl.emulate.kube_protobuf`; answered in protobuf when the client's Accept puts it
first) and chunked (``Transfer-Encoding: chunked``).

Not served (answered with an error, never faked): other subresources, aggregated discovery,
the deprecated ``/watch/`` paths, past states (``resourceVersionMatch=Exact`` of an older
version: 410). A ``continue`` page reads the current state after the last key served (the
store keeps no snapshots).
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import json
import re
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from ..util.yamlcache import safe_load as yaml_safe_load
from .kube_auth import (
    UserInfo,
    access_review,
    impersonate,
    rules_review,
    self_subject_review,
    user_from_certificate,
)
from .kube_fields import PatchError, json_patch, merge_patch
from .kube_helm import HelmInstaller
from .kube_openapi import OpenApi
from .kube_protobuf import MEDIA_TYPE as _PROTOBUF
from .kube_protobuf import ProtobufError, prefers_protobuf
from .kube_protobuf import decode as decode_protobuf
from .kube_protobuf import encode as encode_protobuf
from .kube_reconcile import Controllers, Failure, ValuesValidator
from .kube_store import ApiError, Store, bad_request
from .kube_tables import table, wants_table
from .kube_tls import EmulatorPki, make_pki, server_context
from .kube_types import ResourceType, SelectorError, field_selector, label_selector
from .kube_watch import Watch, check_list_version, paginate, parse_watch
from .kube_workloads import pods_on
from .linstor_view import LINSTOR_NAMESPACE, LINSTOR_SERVICE, handle_rest
from .schemas import builtin_unknown_fields, duplicate_fields

__all__ = ["KubeApi", "KubeApiEmulator", "Response"]

_JSON = "application/json"
_PATCH_TYPES = {
    "application/apply-patch+yaml": "apply",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/json-patch+json": "json",
}


@dataclass(frozen=True)
class Response:
    code: int
    body: bytes
    content_type: str = _JSON
    headers: tuple[tuple[str, str], ...] = ()
    watch: Watch | None = None
    """A watch: the body is its events, streamed by the server as they come (chunked)."""

    @classmethod
    def json(cls, code: int, obj: Any, warnings: tuple[str, ...] = ()) -> Response:
        headers = tuple(("Warning", '299 - "{}"'.format(
            w.replace("\\", "\\\\").replace('"', '\\"'))) for w in warnings)
        return cls(code, json.dumps(obj, separators=(",", ":")).encode(), _JSON, headers)

    @classmethod
    def error(cls, err: ApiError) -> Response:
        return cls.json(err.code, err.status())


def _version_key(version: str) -> tuple[int, int, int]:
    """Kubernetes version priority: GA before beta before alpha, higher numbers first."""
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not m:
        return (3, 0, 0)
    stage = {"": 0, "beta": 1, "alpha": 2}[m.group(2) or ""]
    return (stage, -int(m.group(1)), -int(m.group(3) or 0))


def _user_agent_manager(headers: Mapping[str, str]) -> str:
    agent = headers.get("user-agent") or headers.get("User-Agent") or "unknown"
    return agent.split("/", 1)[0].strip() or "unknown"


class KubeApi:
    """The API server's request handling, without sockets (callers serialize calls)."""

    def __init__(
        self,
        store: Store,
        controllers: Controllers,
        *,
        version: str = "v1.34.1",
        clock: Any = time.monotonic,
    ) -> None:
        self.store = store
        self.controllers = controllers
        self.version = version
        self.clock = clock
        self.requests: collections.Counter[str] = collections.Counter()
        self._multi_query: dict[str, list[str]] = {}
        self.openapi = OpenApi(
            lambda: {(rt.group, rt.version) for rt in store.types() if rt.crd is None},
            lambda: store.crds.documents(),
        )
        self._user = UserInfo.anonymous()

    # ------------------------------------------------------------------ entry point

    def handle(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        user: UserInfo | None = None,
        reconcile: bool = True,
        incremental: bool = False,
    ) -> Response:
        """``user``: who the transport authenticated (None: anonymous). ``reconcile``: run the
        controllers' pass first (the transport skips it when nothing changed since the last),
        ``incremental`` as ``Controllers.reconcile`` says."""
        if reconcile:
            self.controllers.reconcile(self.clock(), incremental=incremental)
        self._user = user or UserInfo.anonymous()
        url = urlsplit(target)
        multi = parse_qs(url.query, keep_blank_values=True)
        self._multi_query = multi
        query = {k: v[-1] for k, v in multi.items()}
        parts = [unquote(p) for p in url.path.split("/") if p]
        self.requests[method] += 1
        try:
            lowered = _lower(headers)
            duplicates = self._duplicates(method, parts, query, lowered, body)
            resp = self._route(method, parts, query, lowered, body)
            if duplicates and 200 <= resp.code < 300:  # fieldValidation=Warn
                warned = Response.json(200, None, tuple(f'duplicate field "{p}"'
                                                        for p in duplicates))
                resp = dataclasses.replace(resp, headers=resp.headers + warned.headers)
            if prefers_protobuf(lowered.get("accept") or ""):
                return _as_protobuf(resp)
            return resp
        except ApiError as err:
            return Response.error(err)
        except SelectorError as exc:
            return Response.error(bad_request(f"unable to parse selector: {exc}"))

    def _duplicates(
        self,
        method: str,
        parts: list[str],
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes,
    ) -> list[str]:
        """Keys a JSON body repeats (the API server's strict decoding): a 400 under
        ``fieldValidation=Strict`` naming them and the unknown fields of a built-in object,
        else the paths to warn about (none under Ignore)."""
        validation = query.get("fieldValidation") or "Warn"
        content_type = (headers.get("content-type") or _JSON).split(";")[0].strip()
        if (method not in ("POST", "PUT", "PATCH") or validation == "Ignore" or not body
                or "json" not in content_type or content_type == "application/json-patch+json"
                or len(parts) < 3 or parts[0] not in ("api", "apis")):
            return []
        duplicates = duplicate_fields(body)
        if not duplicates or validation != "Strict":
            return duplicates
        group, version, rest = ("", parts[1], parts[2:]) if parts[0] == "api" else (
            parts[1], parts[2], parts[3:])
        plural = rest[2] if len(rest) >= 3 and rest[0] == "namespaces" else (rest or [""])[0]
        rt = self.store.resource_type(group, version, plural)
        kind = rt.kind if rt is not None else "Object"
        errors = [f'duplicate field "{p}"' for p in duplicates]
        if rt is not None and rt.crd is None and method != "PATCH":
            obj = json.loads(body)
            if isinstance(obj, dict):
                errors += [f'unknown field "{p}"'
                           for p in builtin_unknown_fields(rt.api_version, rt.kind, obj)]
        raise bad_request(f'{kind} in version "{version}" cannot be handled as a {kind}: '
                          f"strict decoding error: {', '.join(errors)}")

    def _route(
        self,
        method: str,
        parts: list[str],
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes,
    ) -> Response:
        if parts in (["healthz"], ["readyz"], ["livez"]):
            return Response(200, b"ok", "text/plain")
        if parts == ["version"]:
            return Response.json(200, self._version_info())
        if parts[:1] == ["openapi"] and method == "GET":
            code, payload, content_type, extra = self.openapi.handle(
                parts, query, headers.get("accept") or "")
            return Response(code, payload, content_type, extra)
        if not parts or parts[0] not in ("api", "apis"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if parts[0] == "api":
            if len(parts) == 1:
                return Response.json(
                    200,
                    {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
                )
            group, version, rest = "", parts[1], parts[2:]
        else:
            if len(parts) == 1:
                return Response.json(200, self._group_list())
            if len(parts) == 2:
                return Response.json(200, self._group(parts[1]))
            group, version, rest = parts[1], parts[2], parts[3:]
        if not rest:
            if method != "GET":
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
            return Response.json(200, self._resource_list(group, version))
        return self._resource(method, group, version, rest, query, headers, body)

    # ------------------------------------------------------------------ discovery

    def _version_info(self) -> dict[str, Any]:
        m = re.match(r"v(\d+)\.(\d+)", self.version)
        major, minor = (m.group(1), m.group(2)) if m else ("1", "0")
        return {
            "major": major,
            "minor": minor,
            "gitVersion": self.version,
            "gitCommit": "0" * 40,
            "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "go1.24.0",
            "compiler": "gc",
            "platform": "linux/amd64",
        }

    def _versions_by_group(self) -> dict[str, list[str]]:
        groups: dict[str, set[str]] = {}
        for rt in self.store.types():
            if rt.group:
                groups.setdefault(rt.group, set()).add(rt.version)
        return {g: sorted(vs, key=_version_key) for g, vs in sorted(groups.items())}

    def _group_doc(self, group: str, versions: list[str]) -> dict[str, Any]:
        gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}

    def _group_list(self) -> dict[str, Any]:
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [self._group_doc(g, vs) for g, vs in self._versions_by_group().items()],
        }

    def _group(self, group: str) -> dict[str, Any]:
        versions = self._versions_by_group().get(group)
        if not versions:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return {"kind": "APIGroup", "apiVersion": "v1", **self._group_doc(group, versions)}

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        types = sorted(
            (rt for rt in self.store.types() if rt.group == group and rt.version == version),
            key=lambda rt: rt.plural,
        )
        if not types:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        gv = f"{group}/{version}" if group else version
        resources = [entry for rt in types for entry in rt.discovery()]
        if gv == "apps/v1":
            resources += [
                {"name": f"{rt.plural}/scale", "singularName": "", "namespaced": True,
                 "group": "autoscaling", "version": "v1", "kind": "Scale",
                 "verbs": ["get", "patch", "update"]}
                for rt in types if rt.kind in _SCALABLE
            ]
        if gv == "v1":
            # what kubectl drain looks for to use the Eviction API (policy/v1)
            resources.append({"name": "pods/eviction", "singularName": "", "namespaced": True,
                              "group": "policy", "version": "v1", "kind": "Eviction",
                              "verbs": ["create"]})
            resources.append({"name": "services/proxy", "singularName": "",
                              "namespaced": True, "kind": "ServiceProxyOptions",
                              "verbs": ["create", "delete", "get", "patch", "update"]})
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": gv,
            "resources": resources,
        }

    # ------------------------------------------------------------------ resources

    def _resource(
        self,
        method: str,
        group: str,
        version: str,
        rest: list[str],
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes,
    ) -> Response:
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        if group == "" and version == "v1" and namespace is not None and name is not None:
            if plural == "pods" and subresource == "eviction" and len(rest) == 3:
                return self._evict(method, namespace, name, query, headers, body)
            if plural == "services" and subresource == "proxy":
                return self._service_proxy(method, namespace, name, rest[3:], query)
        if len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rt = self.store.resource_type(group, version, plural)
        if rt is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if namespace is not None and not rt.namespaced:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if (
            subresource == "scale"
            and rt.group == "apps"
            and rt.kind in _SCALABLE
            and namespace is not None
            and name is not None
        ):
            return self._scale(method, rt, namespace, name, headers, body)
        if subresource is not None and (subresource != "status" or not rt.has_status):
            raise ApiError(
                404,
                "NotFound",
                f"the server could not find the requested resource ({plural}/{subresource})",
            )
        if rt.verbs == ("create",) and name is None and subresource is None:
            return self._review(method, rt, headers, body)
        if rt.namespaced and name is not None and namespace is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if query.get("watch") in ("true", "1"):
            if method != "GET" or subresource is not None:
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
            return self._watch(rt, namespace, name, query, headers)

        dry_run = query.get("dryRun") == "All"
        validation = query.get("fieldValidation") or "Warn"
        if validation not in ("Strict", "Warn", "Ignore"):
            raise bad_request(f"fieldValidation {validation!r} is not one of Strict, Warn, Ignore")
        manager = query.get("fieldManager") or _user_agent_manager(headers)

        as_table = method == "GET" and subresource is None and wants_table(
            headers.get("accept") or ""
        )
        if name is None:
            if method == "GET":
                check_list_version(self.store, query)
                listed = paginate(self.store, self._list(rt, namespace, query), query,
                                  bool(query.get("labelSelector") or query.get("fieldSelector")))
                if as_table:
                    return self._table(rt, listed["items"], query, listed["metadata"])
                return Response.json(200, listed)
            if method == "POST":
                if rt.namespaced and namespace is None:
                    raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
                result = self.store.create(
                    rt,
                    namespace,
                    _decode(body, headers),
                    manager=manager,
                    dry_run=dry_run,
                    field_validation=validation,
                )
                return Response.json(201, result.obj, result.warnings)
            if method == "DELETE":
                listed = self._list(rt, namespace, query)
                for item in listed["items"]:
                    meta = item["metadata"]
                    self.store.delete(rt, meta.get("namespace"), meta["name"], dry_run=dry_run)
                return Response.json(200, listed)
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")

        if method == "GET":
            got = self.store.get(rt, namespace, name)
            if as_table:
                return self._table(rt, [got], query)
            return Response.json(200, got)
        if method == "PUT":
            result = self.store.replace(
                rt,
                namespace,
                name,
                _decode(body, headers),
                manager=manager,
                subresource=subresource,
                dry_run=dry_run,
                field_validation=validation,
            )
            return Response.json(200, result.obj, result.warnings)
        if method == "PATCH":
            content_type = (headers.get("content-type") or "").split(";")[0].strip()
            patch_type = _PATCH_TYPES.get(content_type)
            if patch_type is None:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted media types "
                    f"include: {', '.join(_PATCH_TYPES)}",
                )
            if patch_type == "strategic" and rt.crd is not None:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "strategic merge patch is not supported for custom resources: use a merge "
                    "patch or server-side apply",
                )
            if patch_type == "apply" and "fieldManager" not in query:
                raise bad_request("PATCH requests of type apply must specify a fieldManager")
            result = self.store.patch(
                rt,
                namespace,
                name,
                patch_type,
                _decode(body, headers, yaml_ok=True),
                manager=manager,
                force=query.get("force") in ("true", "1"),
                subresource=subresource,
                dry_run=dry_run,
                field_validation=validation,
            )
            return Response.json(201 if result.created else 200, result.obj, result.warnings)
        if method == "DELETE":
            return Response.json(200, self.store.delete(rt, namespace, name, dry_run=dry_run))
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")

    def _table(
        self,
        rt: ResourceType,
        items: list[dict[str, Any]],
        query: dict[str, str],
        list_meta: Mapping[str, Any] | None = None,
    ) -> Response:
        doc = table(
            rt.kind, items, self.store.resource_version, self.controllers.wallclock(),
            include_object=query.get("includeObject") or "Metadata",
            printer_columns=self.store.printer_columns(rt),
        )
        doc["metadata"].update(list_meta or {})
        return Response.json(200, doc)

    def _review(
        self, method: str, rt: ResourceType, headers: dict[str, str], body: bytes
    ) -> Response:
        """SelfSubjectReview, SelfSubjectAccessReview, SelfSubjectRulesReview (kube_auth)."""
        if method != "POST":
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on "
                           "the requested resource")
        user = impersonate(self.store, self._user, headers)
        if rt.kind == "SelfSubjectReview":
            stamp = self.controllers.wallclock().strftime("%Y-%m-%dT%H:%M:%SZ")
            return Response.json(201, self_subject_review(user, stamp))
        review = access_review if rt.kind == "SelfSubjectAccessReview" else rules_review
        return Response.json(201, review(self.store, user, _decode(body, headers)))

    def _watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str | None,
        query: dict[str, str],
        headers: dict[str, str],
    ) -> Response:
        """A watch (``kube_watch``): the HTTP layer streams its events as they come."""
        selected = self._predicate(query, rt.kind)
        predicate = selected if name is None else (
            lambda o: (o.get("metadata") or {}).get("name") == name and selected(o))
        render = None
        if wants_table(headers.get("accept") or ""):
            include = query.get("includeObject") or "Metadata"

            def render(obj: dict[str, Any], first: bool) -> Any:
                doc = table(rt.kind, [obj], str(obj["metadata"].get("resourceVersion", "")),
                            self.controllers.wallclock(), include_object=include,
                            printer_columns=self.store.printer_columns(rt))
                if not first:  # as the API server: column definitions with the first event
                    doc["columnDefinitions"] = []
                return doc

        watch = Watch(self.store, rt, namespace, predicate, now=self.clock(), render=render,
                      **parse_watch(query))
        return Response(200, b"", _JSON, watch=watch)

    def _scale(
        self,
        method: str,
        rt: ResourceType,
        namespace: str,
        name: str,
        headers: dict[str, str],
        body: bytes,
    ) -> Response:
        """The ``scale`` subresource (autoscaling/v1 Scale) of Deployments, StatefulSets and
        ReplicaSets: GET, PUT and PATCH of ``spec.replicas`` (what ``kubectl scale`` sends)."""
        obj = self.store.get(rt, namespace, name)
        if method == "GET":
            return Response.json(200, _scale_of(obj))
        if method not in ("PUT", "PATCH"):
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
        current = _scale_of(obj)
        if method == "PUT":
            wanted = _decode(body, headers)
        else:
            content_type = (headers.get("content-type") or "").split(";")[0].strip()
            patch_type = _PATCH_TYPES.get(content_type)
            if patch_type not in ("merge", "strategic", "json"):
                raise ApiError(415, "UnsupportedMediaType",
                               f"the body of the request was in an unknown format - accepted "
                               f"media types include: {', '.join(_PATCH_TYPES)}")
            patch = _decode(body, headers)
            try:
                wanted = (json_patch(current, patch) if patch_type == "json"
                          else merge_patch(current, patch))
            except (PatchError, ValueError, IndexError, TypeError) as exc:
                raise ApiError(422, "Invalid",
                               f"the patch could not be applied: {exc}") from exc
        replicas = ((wanted or {}).get("spec") or {}).get("replicas") if isinstance(
            wanted, dict) else None
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise ApiError(422, "Invalid",
                           f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid '
                           f"value: {replicas!r}: must be greater than or equal to 0")
        self.store.patch(rt, namespace, name, "merge", {"spec": {"replicas": replicas}},
                         manager=_user_agent_manager(headers))
        return Response.json(200, _scale_of(self.store.get(rt, namespace, name)))

    def _evict(
        self,
        method: str,
        namespace: str,
        name: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes,
    ) -> Response:
        if method != "POST":
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
        code, status, extra = self.controllers.pods.evict(
            namespace, name, _decode(body, headers), dry_run=query.get("dryRun") == "All"
        )
        resp = Response.json(code, status)
        return Response(resp.code, resp.body, resp.content_type, extra)

    def _service_proxy(
        self,
        method: str,
        namespace: str,
        target: str,
        path: list[str],
        query: dict[str, str],
    ) -> Response:
        """``services/{[scheme:]name[:port]}/proxy/...``: the LINSTOR controller's REST API;
        every other Service has no endpoints here."""
        pieces = target.split(":")
        if len(pieces) == 3:
            pieces = pieces[1:]
        svc_name, port = pieces[0], (pieces[1] if len(pieces) > 1 else "")
        rt = self.store.type_of("v1", "Service")
        assert rt is not None
        svc = self.store.get(rt, namespace, svc_name)
        ports = (svc.get("spec") or {}).get("ports") or []
        chosen = next(
            (p for p in ports if not port or port in (str(p.get("port")), p.get("name"))), None
        )
        ctl = self.controllers
        if (
            chosen is None
            or svc_name != LINSTOR_SERVICE
            or namespace != ctl.linstor_namespace
        ):
            raise ApiError(
                503, "ServiceUnavailable", f'no endpoints available for service "{target}"'
            )
        code, answer = handle_rest(ctl.storage, method, path, self._multi_query)
        return Response.json(code, answer)

    def _predicate(
        self, query: dict[str, str], kind: str | None = None
    ) -> Callable[[Mapping[str, Any]], bool]:
        preds = []
        if query.get("labelSelector"):
            preds.append(label_selector(query["labelSelector"]))
        if query.get("fieldSelector"):
            preds.append(field_selector(query["fieldSelector"], kind))
        return lambda o: all(p(o) for p in preds)

    def _list(
        self, rt: ResourceType, namespace: str | None, query: dict[str, str]
    ) -> dict[str, Any]:
        return self.store.list(rt, namespace, self._predicate(query, rt.kind))


_SCALABLE = ("Deployment", "StatefulSet", "ReplicaSet")


def _scale_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    selector = (obj.get("spec") or {}).get("selector") or {}
    text = ",".join(f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items()))
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                          "creationTimestamp") if k in meta},
        "spec": {"replicas": int((obj.get("spec") or {}).get("replicas", 1))},
        "status": {"replicas": int((obj.get("status") or {}).get("replicas", 0)),
                   "selector": text},
    }


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _as_protobuf(resp: Response) -> Response:
    """A JSON answer of a built-in type re-encoded for a client that prefers protobuf (errors,
    Tables, custom resources and watches stay JSON, which the client accepts as well)."""
    if resp.content_type != _JSON or resp.watch is not None or not 200 <= resp.code < 300:
        return resp
    try:
        payload = encode_protobuf(json.loads(resp.body))
    except (ProtobufError, ValueError, TypeError, AttributeError):
        return resp
    return Response(resp.code, payload, _PROTOBUF, resp.headers)


def _decode(body: bytes, headers: Mapping[str, str], *, yaml_ok: bool = False) -> Any:
    content_type = (headers.get("content-type") or _JSON).split(";")[0].strip()
    if content_type == _PROTOBUF:
        try:
            return decode_protobuf(body)
        except ProtobufError as exc:
            raise bad_request(f"the request body could not be decoded: {exc}") from exc
    try:
        text = body.decode("utf-8")
        if content_type.endswith("yaml") and (yaml_ok or content_type == "application/yaml"):
            try:  # JSON is YAML, and clients (the python one included) send JSON
                return json.loads(text)
            except ValueError:
                return yaml_safe_load(text)
        return json.loads(text or "null")
    except (UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise bad_request(f"the request body could not be decoded: {exc}") from exc


# --------------------------------------------------------------------------- the HTTPS server


def _read_chunked(stream: Any) -> bytes:
    """A ``Transfer-Encoding: chunked`` request body (chunk extensions and trailers ignored)."""
    body = bytearray()
    while True:
        size = int(stream.readline(1024).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while stream.readline(1024) not in (b"\r\n", b"\n", b""):
                pass  # trailer fields
            return bytes(body)
        body += stream.read(size)
        stream.readline(1024)  # the CRLF after the chunk


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    server: _Server

    def _serve(self) -> None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            body = _read_chunked(self.rfile)
        else:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
        user = user_from_certificate(self.connection.getpeercert())
        resp = self.server.emulator.handle(self.command, self.path, dict(self.headers), body,
                                           user=user)
        if resp.watch is not None:
            self._stream(resp.watch)
            return
        self.send_response(resp.code)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        for key, value in resp.headers:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(resp.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def _stream(self, watch: Watch) -> None:
        """Serve a watch: chunked, one JSON event per line, as the events come. The thread
        sleeps until the store changes, a controller's timed transition or the watch's next
        bookmark or timeout falls due, or the emulator stops; it runs the controllers' pass
        the change may call for, as a request would."""
        emu = self.server.emulator
        self.send_response(200)
        self.send_header("Content-Type", _JSON)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        emu.watch_opened()
        try:
            while True:
                seen = emu.changes
                emu.settle()
                with emu.lock:
                    now = emu.api.clock()
                    events = watch.stop() if emu.stopping else watch.poll(now)
                    wait = min(watch.wait_time(now), emu.controllers.next_due - now)
                if events:
                    data = b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n"
                                    for e in events)
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                if watch.done:
                    break
                if _peer_closed(self.connection):
                    self.close_connection = True
                    return
                emu.await_change(seen, min(max(wait, 0.05), _LIVENESS_CHECK))
            self.wfile.write(b"0\r\n\r\n")
            if emu.stopping:
                self.close_connection = True
        except OSError:  # the client went away (reset, TLS error, write timeout)
            self.close_connection = True
        finally:
            emu.watch_closed()

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: request lines could carry object names; nothing secret, but no noise."""


_LIVENESS_CHECK = 2.0
"""Seconds an idle watch waits at most before checking that its client is still there."""


def _peer_closed(conn: Any) -> bool:
    """A watch client sends nothing more on its connection: readable means it closed."""
    try:
        readable, _, _ = select.select([conn], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: KubeApiEmulator) -> None:
        self.emulator = emulator
        super().__init__(address, _Handler)

    def get_request(self) -> Any:
        sock, addr = super().get_request()
        # one TLS record per header block and body: without this, Nagle + delayed ACK cost ~40 ms
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # the handshake runs on the first read, in the connection's own thread
        return self.emulator.ssl_context.wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False
        ), addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.emulator.rejected_connections += 1


class _PassLock:
    """The emulator's lock, and whether the controllers' inputs outside the store changed.

    Entered as itself by the methods that change what the controllers read besides the store
    (kubelets, injected faults, storage, pod readiness, ...): that marks a pass as due. Entered
    through ``quiet`` (the same lock) by requests, watches and passes, which change controller
    state only through the store, whose revision says so."""

    def __init__(self) -> None:
        self.quiet = threading.RLock()
        self.touched = True

    def __enter__(self) -> None:
        self.quiet.acquire()
        self.touched = True

    def __exit__(self, *exc: object) -> None:
        self.quiet.release()


class KubeApiEmulator:
    """A Kubernetes API server stand-in on loopback with real TLS (see the module docstring)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        require_client_cert: bool = True,
        kubernetes_version: str = "v1.34.1",
        crd_delay: float = 0.0,
        workload_delay: float = 0.0,
        source_delay: float = 0.0,
        release_delay: float = 0.0,
        retry_interval: float = 0.4,
        operator_delay: float = 0.0,
        values_validators: Mapping[str, ValuesValidator] | None = None,
        cni_charts: tuple[str, ...] = ("cilium",),
        cluster_name: str = "emulated",
        ca: tuple[bytes, bytes] | None = None,
        helm: HelmInstaller | None = None,
    ) -> None:
        """``ca``: (certificate PEM, key PEM) of the cluster's Kubernetes CA to issue the
        server and admin certificates from (default: a fresh CA per emulator). ``helm``:
        renders and installs the charts it can read when a HelmRelease's action runs (see
        :mod:`cloudctl.emulate.kube_helm`; None: releases install no objects)."""
        self.host = host
        self.port = port
        self.cluster_name = cluster_name
        self.pki: EmulatorPki = make_pki(host, ca=ca)
        self.ssl_context = server_context(self.pki, require_client_cert=require_client_cert)
        self.store = Store()
        self.controllers = Controllers(
            self.store,
            workload_delay=workload_delay,
            release_delay=release_delay,
            source_delay=source_delay,
            crd_delay=crd_delay,
            retry_interval=retry_interval,
            operator_delay=operator_delay,
            values_validators=dict(values_validators or {}),
            cni_charts=cni_charts,
            kubelet_version=kubernetes_version,
            helm=helm,
        )
        self.api = KubeApi(self.store, self.controllers, version=kubernetes_version)
        self.rejected_connections = 0
        self._guards: dict[str, tuple[str, str, str | None, bool]] = {}
        self._unready_guards: set[str] = set()
        self._lock = _PassLock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._changed = threading.Condition()
        self.changes = 0
        """Counts store writes (watches sleep until it moves)."""
        self.stopping = False
        self._watches = 0
        self._settled = -1
        self.store.add_listener(self._note_change)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> KubeApiEmulator:
        if self._server is not None:
            return self
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"kube-api-emulator:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        with self._changed:  # open watches end their streams, then the server stops
            self.stopping = True
            self._changed.notify_all()
            self._changed.wait_for(lambda: self._watches == 0, timeout=5)
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None
        self.stopping = False

    # ------------------------------------------------------------------ watches

    @property
    def lock(self) -> threading.RLock:
        """Held while the API or a controller works on the store. (Store writes made under it
        are seen by the next pass through the store's revision.)"""
        return self._lock.quiet

    def _pass_due(self) -> bool:
        """Whether the controllers have something to do (the lock held): the store changed
        since the last pass, something else they read changed (see ``_PassLock``), or a timed
        transition fell due. Otherwise a pass would change nothing."""
        return (self._lock.touched or self.store.revision != self._settled
                or self.api.clock() >= self.controllers.next_due)

    def _note_change(self) -> None:
        with self._changed:
            self.changes += 1
            self._changed.notify_all()

    def await_change(self, seen: int, timeout: float) -> None:
        """Sleep until the store changed since ``changes`` was ``seen``, the emulator stops or
        ``timeout`` seconds passed."""
        with self._changed:
            self._changed.wait_for(lambda: self.changes != seen or self.stopping, timeout)

    def settle(self) -> None:
        """The controllers' pass a watch would otherwise wait for: when the store changed
        since the last pass (a request's, the rack's or a watch's), or a timed transition fell
        due."""
        with self._lock.quiet:
            if self._pass_due():
                self.reconcile()

    def watch_opened(self) -> None:
        with self._changed:
            self._watches += 1

    def watch_closed(self) -> None:
        with self._changed:
            self._watches -= 1
            self._changed.notify_all()

    @property
    def open_watches(self) -> int:
        return self._watches

    def __enter__(self) -> KubeApiEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def handle(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        user: UserInfo | None = None,
    ) -> Response:
        with self._lock.quiet:
            due = self._pass_due()
            incremental = not self._lock.touched
            if due:  # the request runs a pass first, as the controllers would have by now
                self._lock.touched = False
                self._settled = self.store.revision
            return self.api.handle(method, target, headers, body, user=user, reconcile=due,
                                   incremental=incremental)

    # ------------------------------------------------------------------ client access

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    @property
    def ca_pem(self) -> bytes:
        return self.pki.ca_pem

    def kubeconfig(self, *, server: str | None = None) -> bytes:
        """An admin kubeconfig (holds the client key: store it 0600)."""
        b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
        user = f"admin@{self.cluster_name}"
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": self.cluster_name,
                    "cluster": {
                        "server": server or self.url,
                        "certificate-authority-data": b64(self.pki.ca_pem),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": b64(self.pki.client_cert_pem),
                        "client-key-data": b64(self.pki.client_key_pem),
                    },
                }
            ],
            "contexts": [
                {
                    "name": user,
                    "context": {
                        "cluster": self.cluster_name,
                        "user": user,
                        "namespace": "default",
                    },
                }
            ],
            "current-context": user,
            "preferences": {},
        }
        return yaml.safe_dump(doc, sort_keys=False).encode()

    # ------------------------------------------------------------------ test and rack hooks

    def revision(self) -> int:
        """Changes whenever an object is created, changed or deleted (the store's
        resourceVersion counter)."""
        return int(self.store.resource_version)

    def next_due(self) -> float:
        """After ``reconcile``: when the next timed transition falls due (inf: none)."""
        return self.controllers.next_due

    def reconcile(self) -> None:
        with self._lock.quiet:
            incremental = not self._lock.touched
            self._lock.touched = False
            self._settled = self.store.revision  # what this pass sees (watches: see settle)
            self.controllers.reconcile(self.api.clock(), incremental=incremental)
            if any(g[3] and n not in self._unready_guards for n, g in self._guards.items()):
                self._make_guards()  # an unhealthy guard pod, once its pod exists

    def add_node(
        self, name: str, ip: str, roles: tuple[str, ...] | list[str] = ("worker",), *,
        settle: bool = True,
    ) -> None:
        """A node joins (kubelet registered): NotReady until the CNI release is Ready.
        ``settle=False``: the caller runs the controllers' pass itself once every node of a
        batch has joined (the rack: a pass per node would be a hundred passes)."""
        labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": "amd64",
        }
        for role in roles:
            role = "control-plane" if role in ("controlplane", "control-plane") else role
            labels[f"node-role.kubernetes.io/{role}"] = ""
        with self._lock:
            rt = self.store.type_of("v1", "Node")
            assert rt is not None
            if self.store.lookup(rt, None, name) is not None:
                return
            self.store.create(
                rt,
                None,
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": name, "labels": labels},
                    "spec": {},
                },
                manager="kubelet",
            )
            self.store.set_status(
                rt,
                None,
                name,
                {
                    "addresses": [
                        {"type": "InternalIP", "address": ip},
                        {"type": "Hostname", "address": name},
                    ],
                    "nodeInfo": _node_info(name, self.api.version),
                    "capacity": {
                        "cpu": "4",
                        "memory": "16Gi",
                        "pods": "110",
                        "ephemeral-storage": "100Gi",
                    },
                    "allocatable": {
                        "cpu": "4",
                        "memory": "15Gi",
                        "pods": "110",
                        "ephemeral-storage": "90Gi",
                    },
                    "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                },
            )
            if settle:
                self.controllers.reconcile(self.api.clock())
            if name in self._guards:
                self._make_guards()

    def set_cni_installed(self, installed: bool | None) -> None:
        """Whether the nodes' network plugin runs (see ``Controllers.cni_installed``); the
        controllers react at once."""
        with self._lock:
            self.controllers.cni_installed = installed
        self.reconcile()

    def set_kubelet(self, name: str, *, posting: bool, version: str | None) -> None:
        """What the node's kubelet reports: whether it posts status (False: the Node turns
        Ready=Unknown with the unreachable taint) and its version (``nodeInfo``)."""
        from .kube_reconcile import Kubelet

        with self._lock.quiet:  # called for every node on every rack pass: only a change
            # marks a pass due
            if self.controllers.kubelets.get(name) != Kubelet(posting, version):
                self.controllers.kubelets[name] = Kubelet(posting, version)
                self._lock.touched = True

    def remove_node(self, name: str) -> None:
        with self._lock:
            rt = self.store.type_of("v1", "Node")
            assert rt is not None
            if self.store.lookup(rt, None, name) is not None:
                self.store.delete(rt, None, name)

    def fail_release(
        self,
        name: str,
        reason: str = "",
        message: str = "injected failure",
        *,
        times: int | None = None,
        namespace: str | None = None,
    ) -> None:
        """The named HelmRelease's Helm actions fail (once its dependencies are Ready):
        ``times`` attempts (None: all), with this reason (default InstallFailed/UpgradeFailed)
        and error message; helm-controller's remediation retries decide what happens next."""
        key = f"{namespace}/{name}" if namespace else name
        with self._lock:
            self.controllers.failures[key] = Failure(reason, message, times)
            self.controllers._injected.pop(key, None)

    def set_helm(self, installer: HelmInstaller | None) -> None:
        """Render and install readable charts with ``installer`` from now on (None: stop)."""
        with self._lock:
            self.controllers.helm = installer

    def fail_component(
        self, component: str, reason: str = "", message: str = "injected failure"
    ) -> None:
        """``kubevirt`` or ``cdi``: its operator never finishes deploying the CR."""
        with self._lock:
            self.controllers.component_faults[component] = Failure(reason, message)

    def clear_failure(self, name: str, *, namespace: str | None = None) -> None:
        key = f"{namespace}/{name}" if namespace else name
        with self._lock:
            self.controllers.failures.pop(key, None)

    def set_release_delay(self, name: str, seconds: float, *, namespace: str | None = None) -> None:
        key = f"{namespace}/{name}" if namespace else name
        with self._lock:
            self.controllers.release_delays[key] = seconds

    # ------------------------------------------------------------------ pods, drains, storage

    def set_pod_ready(self, namespace: str, name: str, ready: bool = True) -> None:
        """The pod keeps running but its Ready condition turns False (an unhealthy pod for
        ``unhealthyPodEvictionPolicy``) or True again. KeyError when there is no such pod."""
        with self._lock:
            self.controllers.pods.set_pod_ready(namespace, name, ready)
            self.controllers.reconcile(self.api.clock())

    def pods_on(self, node: str) -> list[str]:
        """``namespace/name`` of every pod bound to ``node``."""
        return pods_on(self.list("v1", "Pod"), node)

    def guard_node(self, node: str, name: str = "drain-guard", namespace: str = "default", *,
                   policy: str | None = None, unhealthy: bool = False) -> None:
        """A Deployment with one pod pinned to ``node`` (nodeSelector on its hostname) and a
        PodDisruptionBudget ``maxUnavailable: 0`` over it: draining ``node`` is refused. Made
        when the node registers if it has not yet. ``policy``: the budget's
        ``unhealthyPodEvictionPolicy``; ``unhealthy``: the first pod runs but is not Ready."""
        with self._lock:
            self._guards[node] = (name, namespace, policy, unhealthy)
            self._make_guards()

    def _make_guards(self) -> None:
        node_rt = self.store.type_of("v1", "Node")
        dep_rt = self.store.type_of("apps/v1", "Deployment")
        pdb_rt = self.store.type_of("policy/v1", "PodDisruptionBudget")
        assert node_rt is not None and dep_rt is not None and pdb_rt is not None
        for node, (name, ns, policy, unhealthy) in sorted(self._guards.items()):
            if self.store.lookup(node_rt, None, node) is None:
                continue
            if self.store.lookup(dep_rt, ns, name) is not None:
                if unhealthy:
                    self._unready_guard(node, name, ns)
                continue
            labels = {"app.kubernetes.io/name": name, "cloudctl.dev/guards-node": node}
            self.store.create(dep_rt, ns, {
                "metadata": {"name": name, "labels": labels},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "nodeSelector": {"kubernetes.io/hostname": node},
                            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
                        },
                    },
                },
            }, manager="cloudctl-fault")
            pdb_spec: dict[str, Any] = {"maxUnavailable": 0, "selector": {"matchLabels": labels}}
            if policy:
                pdb_spec["unhealthyPodEvictionPolicy"] = policy
            self.store.create(pdb_rt, ns, {"metadata": {"name": name}, "spec": pdb_spec},
                              manager="cloudctl-fault")
        self.controllers.reconcile(self.api.clock())

    def _unready_guard(self, node: str, name: str, ns: str) -> None:
        """The guard's first pod on ``node`` turns not Ready, once (its replacement is
        healthy)."""
        if node in self._unready_guards:
            return
        for pod in self.list("v1", "Pod", namespace=ns):
            labels = pod["metadata"].get("labels") or {}
            if labels.get("cloudctl.dev/guards-node") == node and \
                    (pod.get("spec") or {}).get("nodeName") == node:
                self.controllers.pods.set_pod_ready(ns, pod["metadata"]["name"], False)
                self._unready_guards.add(node)
                return

    def start_linstor(self, namespace: str = LINSTOR_NAMESPACE) -> None:
        """Run the LINSTOR controller now (as once the linstor-cluster release is Ready)."""
        with self._lock:
            self.controllers.start_linstor(namespace)

    def add_storage_resource(
        self, name: str, replicas: Mapping[str, str], *, in_use: str | None = None
    ) -> None:
        """Define a LINSTOR resource: node -> DRBD disk state of its replica (``UpToDate``,
        ``Outdated``, ``Inconsistent``, ``Diskless``, ``TieBreaker``, ...)."""
        with self._lock:
            self.controllers.storage.add(name, replicas, in_use=in_use)

    def set_disk_state(self, name: str, node: str, state: str) -> None:
        with self._lock:
            self.controllers.storage.set_disk_state(name, node, state)

    def degrade_storage(
        self, resource: str, *, node: str | None = None, state: str = "Outdated"
    ) -> None:
        """Every replica of ``resource`` but the one on ``node`` becomes ``state``, so
        ``node`` holds the last UpToDate replica (applied when LINSTOR runs)."""
        with self._lock:
            ctl = self.controllers
            ctl.storage_faults.append((resource, node, state))
            if ctl.linstor_namespace is not None:
                node_rt = self.store.type_of("v1", "Node")
                assert node_rt is not None
                names = [s.obj["metadata"]["name"] for s in self.store.iter_stored(node_rt)]
                ctl.storage.degrade(resource, names, node, state)

    def storage_view(self) -> list[dict[str, Any]]:
        """What ``GET .../proxy/v1/view/resources`` answers."""
        with self._lock.quiet:
            return self.controllers.storage.view()

    def get(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        with self._lock.quiet:
            rt = self.store.type_of(api_version, kind)
            if rt is None:
                return None
            stored = self.store.lookup(rt, namespace, name)
            return None if stored is None else self.store.render(rt, stored)

    def list(
        self, api_version: str, kind: str, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        with self._lock.quiet:
            rt = self.store.type_of(api_version, kind)
            if rt is None:
                return []
            return list(self.store.list(rt, namespace)["items"])


def _node_info(name: str, kubelet_version: str) -> dict[str, str]:
    """Every field of NodeSystemInfo (typed clients require them), stable per node name."""
    ids = [
        str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{kind}.{name}.cloudctl.emulated"))
        for kind in ("machine", "system", "boot")
    ]
    return {
        "machineID": ids[0].replace("-", ""),
        "systemUUID": ids[1],
        "bootID": ids[2],
        "kernelVersion": "6.12.0-talos",
        "osImage": "Talos (emulated)",
        "containerRuntimeVersion": "containerd://2.1.0",
        "kubeletVersion": kubelet_version,
        "kubeProxyVersion": "",
        "operatingSystem": "linux",
        "architecture": "amd64",
    }
