"""A Kubernetes API client on the official ``kubernetes`` package: kubeconfig loading (TLS with
the kubeconfig's CA and client certificate), raw JSON requests, and discovery-based mapping of
(apiVersion, kind) to a REST resource.

Requests go through the package's ``ApiClient`` (its urllib3 pool, TLS settings and auth
headers) but bodies stay plain JSON dicts: cloudctl applies arbitrary manifests, including
custom resources the typed models do not know.
"""

from __future__ import annotations

import builtins
import json
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.config.config_exception import ConfigException

from ..errors import InputError, Problem
from .errors import KubeApiError, from_status, translate
from .objects import ObjectRef

__all__ = ["JSON", "Kube", "Resource", "api_client", "load_configuration"]

JSON = "application/json"
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"


def load_configuration(
    kubeconfig: bytes | str | Path | Mapping[str, Any], *, context: str | None = None
) -> k8s.Configuration:
    """Client configuration from kubeconfig bytes/text, a path, or a parsed mapping.

    The ``kubernetes`` package writes embedded certificate and key data to temporary files
    (``mkstemp``: mode 0600, removed at exit) because urllib3 loads them from files.
    """
    source = "kubeconfig"
    if isinstance(kubeconfig, Path):
        source = str(kubeconfig)
        try:
            kubeconfig = kubeconfig.read_bytes()
        except OSError as exc:
            raise InputError(Problem("", f"cannot read: {exc.strerror}"), source=source) from exc
    if isinstance(kubeconfig, bytes | str):
        try:
            data = yaml.safe_load(kubeconfig)
        except yaml.YAMLError as exc:
            raise InputError(Problem("", f"not valid YAML: {exc}"), source=source) from exc
    else:
        data = dict(kubeconfig)
    if not isinstance(data, dict):
        raise InputError(Problem("", "a kubeconfig must be a mapping"), source=source)
    cfg = k8s.Configuration()
    try:
        k8s_config.load_kube_config_from_dict(
            data, context=context, client_configuration=cfg, persist_config=False
        )
    except (ConfigException, KeyError, TypeError, ValueError) as exc:
        raise InputError(Problem("", f"unusable kubeconfig: {exc}"), source=source) from exc
    return cfg


def api_client(
    kubeconfig: bytes | str | Path | Mapping[str, Any], *, context: str | None = None
) -> k8s.ApiClient:
    """An official ``ApiClient`` for the kubeconfig (its CA, client certificate or token)."""
    return k8s.ApiClient(load_configuration(kubeconfig, context=context))


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the REST API (from discovery)."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    def collection(self, namespace: str | None) -> str:
        base = (
            f"/apis/{self.api_version}" if "/" in self.api_version else f"/api/{self.api_version}"
        )
        if self.namespaced and namespace:
            return f"{base}/namespaces/{quote(namespace, safe='')}/{self.plural}"
        return f"{base}/{self.plural}"

    def item(self, name: str, namespace: str | None) -> str:
        return f"{self.collection(namespace)}/{quote(name, safe='')}"


class Kube:
    """JSON requests against one API server, errors translated, with a discovery cache."""

    def __init__(self, api: k8s.ApiClient, *, timeout: float = 30.0) -> None:
        self.api = api
        self.timeout = timeout
        self._discovery: dict[str, dict[str, Resource] | None] = {}

    @classmethod
    def from_kubeconfig(
        cls,
        kubeconfig: bytes | str | Path | Mapping[str, Any],
        *,
        context: str | None = None,
        timeout: float = 30.0,
    ) -> Kube:
        return cls(api_client(kubeconfig, context=context), timeout=timeout)

    def close(self) -> None:
        self.api.close()

    def __enter__(self) -> Kube:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def server(self) -> str:
        return str(self.api.configuration.host)

    # ------------------------------------------------------------------ raw requests

    def _headers(self, content_type: str | None) -> dict[str, str]:
        cfg = self.api.configuration
        headers = {"Accept": JSON, "User-Agent": "cloudctl"}
        if content_type:
            headers["Content-Type"] = content_type
        if cfg.refresh_api_key_hook is not None:
            cfg.refresh_api_key_hook(cfg)
        token = (cfg.api_key or {}).get("authorization")
        if token:
            prefix = (cfg.api_key_prefix or {}).get("authorization")
            headers["Authorization"] = f"{prefix} {token}" if prefix else token
        return headers

    def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> tuple[int, Any]:
        """One request; returns (HTTP status, decoded JSON). Errors name ``what``."""
        url = self.server + path
        if query:
            url += "?" + urlencode(query)
        if body is not None and content_type is None:
            content_type = JSON
        try:
            resp = self.api.rest_client.request(
                method,
                url,
                headers=self._headers(content_type),
                body=body,
                _request_timeout=self.timeout,
            )
            data = getattr(resp, "data", None)
            if data is None:
                data = resp.read()
        except Exception as exc:  # translated: ApiException, urllib3 and socket errors
            raise translate(exc, what=what, server=self.server) from exc
        status = int(resp.status)
        if status >= 400:
            raise from_status(what, status, data)
        if isinstance(data, bytes):
            data = data.decode("utf-8")
        try:
            return status, json.loads(data) if data else None
        except ValueError as exc:
            raise from_status(what, status, f"response is not JSON: {data[:200]!r}") from exc

    # ------------------------------------------------------------------ discovery

    def _group_version(self, api_version: str) -> dict[str, Resource] | None:
        if api_version not in self._discovery:
            path = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
            try:
                _, doc = self.request("GET", path, what=f"discovery of {api_version}")
            except KubeApiError as err:
                if err.code != 404:
                    raise
                doc = None
            if doc is None:
                self._discovery[api_version] = None
            else:
                self._discovery[api_version] = {
                    r["kind"]: Resource(api_version, r["kind"], r["name"], bool(r["namespaced"]))
                    for r in doc.get("resources") or []
                    if "/" not in r["name"]
                }
        return self._discovery[api_version]

    def resource(self, api_version: str, kind: str) -> Resource | None:
        """The REST resource serving ``kind`` in ``api_version``, or None if not served."""
        kinds = self._group_version(api_version)
        return None if kinds is None else kinds.get(kind)

    def refresh_discovery(self) -> None:
        """Forget the discovery cache (after CRDs were added or removed)."""
        self._discovery.clear()

    def resource_for(self, ref: ObjectRef) -> Resource:
        res = self.resource(ref.api_version, ref.kind)
        if res is None:
            raise KubeApiError(
                str(ref),
                code=404,
                reason="NotFound",
                message=f"the API server does not serve kind {ref.kind} in apiVersion "
                f"{ref.api_version} (is its CustomResourceDefinition installed?)",
            )
        return res

    # ------------------------------------------------------------------ objects

    def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        res = self.resource_for(ref)
        try:
            _, obj = self.request("GET", res.item(ref.name, ref.namespace), what=str(ref))
        except KubeApiError as err:
            if err.code == 404:
                return None
            raise
        return obj  # type: ignore[no-any-return]

    def list(
        self,
        api_version: str,
        kind: str,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        ref = ObjectRef(api_version, kind, "*", namespace)
        res = self.resource_for(ref)
        query = {"labelSelector": label_selector} if label_selector else None
        _, doc = self.request("GET", res.collection(namespace), what=f"list {kind}", query=query)
        items = doc.get("items") or []
        for item in items:  # list items omit apiVersion/kind on real servers
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items

    def list_versioned(
        self,
        api_version: str,
        kind: str,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
    ) -> tuple[builtins.list[dict[str, Any]], str]:
        """The items (the first ``limit`` if set) and the list's ``resourceVersion`` (where a
        watch of them starts)."""
        res = self.resource_for(ObjectRef(api_version, kind, "*", namespace))
        query = {k: v for k, v in (("labelSelector", label_selector),
                                   ("fieldSelector", field_selector)) if v}
        if limit:
            query["limit"] = str(limit)
        _, doc = self.request("GET", res.collection(namespace), what=f"list {kind}",
                              query=query or None)
        items = doc.get("items") or []
        for item in items:
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items, str((doc.get("metadata") or {}).get("resourceVersion") or "")

    def watch(
        self,
        api_version: str,
        kind: str,
        *,
        resource_version: str,
        timeout: float,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The watch events (``{"type", "object"}``) of ``kind`` after ``resource_version``
        for at most ``timeout`` seconds (the server's ``timeoutSeconds``, and a client-side
        read timeout so that a silent server cannot hang the caller). Ends when the server
        ends the stream or the time is up; an ``ERROR`` event (e.g. 410 Expired) is yielded
        as it came. HTTP errors raise ``KubeApiError``, connection errors ``KubeUnreachable``."""
        res = self.resource_for(ObjectRef(api_version, kind, "*", namespace))
        query = {"watch": "true", "resourceVersion": resource_version,
                 "timeoutSeconds": str(max(1, math.ceil(timeout)))}
        query.update({k: v for k, v in (("labelSelector", label_selector),
                                        ("fieldSelector", field_selector)) if v})
        url = self.server + res.collection(namespace) + "?" + urlencode(query)
        what = f"watch {kind}" + (f" in {namespace}" if namespace else "")
        deadline = time.monotonic() + timeout
        try:
            resp = self.api.rest_client.request(
                "GET", url, headers=self._headers(None),
                _request_timeout=(min(self.timeout, 30.0), max(0.05, timeout)))
        except Exception as exc:
            raise translate(exc, what=what, server=self.server) from exc
        raw = getattr(resp, "response", resp)
        try:
            if int(resp.status) >= 400:
                raise from_status(what, int(resp.status), resp.read())
            buffer = b""
            for chunk in raw.stream(2**16):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
                if time.monotonic() >= deadline:
                    return
        except (urllib3.exceptions.ReadTimeoutError, TimeoutError):
            return
        except ValueError as exc:
            raise from_status(what, int(resp.status), f"watch event is not JSON: {exc}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise translate(exc, what=what, server=self.server) from exc
        finally:
            raw.close()
            release = getattr(raw, "release_conn", None)
            if release is not None:
                release()

    def delete(self, ref: ObjectRef) -> bool:
        """Delete; False when it was already gone."""
        res = self.resource_for(ref)
        try:
            self.request("DELETE", res.item(ref.name, ref.namespace), what=str(ref))
        except KubeApiError as err:
            if err.code == 404:
                return False
            raise
        return True

    def server_side_apply(
        self,
        obj: Mapping[str, Any],
        *,
        field_manager: str = "cloudctl",
        force: bool = True,
        strict: bool = True,
    ) -> tuple[int, dict[str, Any]]:
        """PATCH ``application/apply-patch+yaml``; returns (201 created | 200, the object)."""
        ref = ObjectRef.of(obj)
        res = self.resource_for(ref)
        query = {"fieldManager": field_manager, "force": "true" if force else "false"}
        if strict:
            query["fieldValidation"] = "Strict"
        status, out = self.request(
            "PATCH",
            res.item(ref.name, ref.namespace if res.namespaced else None),
            what=str(ref),
            query=query,
            body=dict(obj),
            content_type=APPLY_PATCH,
        )
        return status, out
