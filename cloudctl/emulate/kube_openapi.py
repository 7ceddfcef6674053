"""OpenAPI documents of the Kubernetes API emulator: ``/openapi/v2`` and ``/openapi/v3``.

The built-in types' documents are the upstream Kubernetes v1.35 files vendored (gzip, data
only) under ``cloudctl/emulate/data/kubernetes/openapi/`` (origin, licence and SHA-256 of the
uncompressed bytes in that directory's ``NOTICE`` and ``manifest.json``), served unchanged.
The custom resources registered at run time are added as kube-apiserver's CRD OpenAPI builder
adds them:

- ``/openapi/v3`` is the index ``{"paths": {"apis/<group>/<version>": {"serverRelativeURL":
  "/openapi/v3/apis/<group>/<version>?hash=<SHA-512>"}}}`` of the served group-versions (the
  built-ins the store serves, every CRD group-version); ``/openapi/v3/<path>`` is one document.
  A built-in group-version without a vendored v3 file (``scheduling.k8s.io/v1``) gets one made
  from the upstream v2 document (:func:`v3_from_swagger`: the same paths, operations, parameters,
  media types and schemas as the upstream v3 files have, tested against them; v2 lacks only
  their ``default`` values). A CRD group-version's document has the
  collection/item/status paths (operations tagged with ``x-kubernetes-group-version-kind`` and
  the ``dryRun``/``fieldManager``/``fieldValidation``/``force`` query parameters, derived from
  the upstream CustomResourceDefinition operations, no strategic merge patch) and component
  schemas ``<reversed group>.<version>.<Kind>`` and ``...<Kind>List`` from the CRD's
  ``openAPIV3Schema`` with ``metadata`` a reference to ObjectMeta, plus the meta types they
  reference. kubectl decides from the PATCH operation's ``fieldValidation`` parameter that the
  server validates fields (so ``--validate=strict`` sends ``fieldValidation=Strict``), and
  ``kubectl explain`` reads the component schemas.
- ``/openapi/v2`` is the upstream swagger document plus each CRD version's definitions (v2
  cannot express ``nullable``, ``oneOf``/``anyOf``/``not`` or int-or-string types: dropped, as
  the server's v2 conversion does) and paths, as JSON or, when the client asks for it first, in
  the gnostic protobuf encoding client-go's ``OpenAPISchema()`` requests
  (:func:`cloudctl.emulate.kube_protobuf.openapi_v2_protobuf`): kubectl validates a ``List`` and
  objects of kinds no CRD serves yet on the client with it, as against a real server.

Loading is lazy: nothing is read until the first ``/openapi`` request, each vendored file is
decompressed once, and the documents of custom resources are rebuilt only when the registered
CRDs change.
"""

from __future__ import annotations

import copy
import functools
import gzip
import hashlib
import json
import threading
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

__all__ = [
    "OpenApi",
    "builtin_v3",
    "crd_definition_name",
    "group_version_path",
    "manifest",
    "swagger_definitions",
    "v3_from_swagger",
]

_DATA = "data/kubernetes"
_META = "io.k8s.apimachinery.pkg.apis.meta.v1"
_CRD_DEF = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition"
_CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
_CRD_GVK = {"group": "apiextensions.k8s.io", "version": "v1", "kind": "CustomResourceDefinition"}
_STRATEGIC = "application/strategic-merge-patch+json"
_CR_MEDIA = ("application/json", "application/yaml")
_V2_PB = "application/com.github.proto-openapi.spec.v2"
_API_VERSION_DOC = (
    "APIVersion defines the versioned schema of this representation of an object. Servers "
    "should convert recognized schemas to the latest internal value, and may reject "
    "unrecognized values. More info: https://git.k8s.io/community/contributors/devel/"
    "sig-architecture/api-conventions.md#resources"
)
_KIND_DOC = (
    "Kind is a string value representing the REST resource this object represents. Servers "
    "may infer this from the endpoint the client submits requests to. Cannot be updated. In "
    "CamelCase. More info: https://git.k8s.io/community/contributors/devel/"
    "sig-architecture/api-conventions.md#types-kinds"
)
_METADATA_DOC = (
    "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/"
    "sig-architecture/api-conventions.md#metadata"
)
_LIST_META_DOC = (
    "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/"
    "sig-architecture/api-conventions.md#types-kinds"
)

Reply = tuple[int, bytes, str, tuple[tuple[str, str], ...]]
"""(status code, body, content type, extra headers)."""


def _read(relative: str) -> bytes:
    ref = resources.files("cloudctl.emulate").joinpath(f"{_DATA}/{relative}.gz")
    return gzip.decompress(ref.read_bytes())


@functools.cache
def manifest() -> dict[str, dict[str, Any]]:
    """Vendored path -> {sha256, sha512, size} of the uncompressed upstream bytes."""
    ref = resources.files("cloudctl.emulate").joinpath(f"{_DATA}/manifest.json")
    data: dict[str, dict[str, Any]] = json.loads(ref.read_text(encoding="utf-8"))
    return data


def group_version_path(group: str, version: str) -> str:
    """``api/v1`` or ``apis/<group>/<version>``: a v3 document's key in the index."""
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _v3_file(path: str) -> str:
    return f"openapi/v3/{path.replace('/', '__')}_openapi.json"


def builtin_paths() -> dict[str, str]:
    """v3 index key -> vendored file, for every vendored group-version document."""
    out = {}
    for name in manifest():
        if name.startswith("openapi/v3/") and name.endswith("_openapi.json"):
            key = name[len("openapi/v3/"):-len("_openapi.json")].replace("__", "/")
            out[key] = name
    return out


@functools.cache
def builtin_v3_bytes(path: str) -> bytes:
    return _read(_v3_file(path))


@functools.cache
def builtin_v3(path: str) -> dict[str, Any]:
    """The vendored v3 document of a built-in group-version (parsed once; do not mutate)."""
    doc: dict[str, Any] = json.loads(builtin_v3_bytes(path))
    return doc


@functools.cache
def _swagger() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(_read("openapi/v2/swagger.json"))
    return doc


def swagger_definitions() -> dict[str, Any]:
    """The upstream v2 document's definitions (the built-in types' JSON shapes)."""
    defs: dict[str, Any] = _swagger()["definitions"]
    return defs


def crd_definition_name(group: str, version: str, kind: str) -> str:
    """``io.fluxcd.toolkit.helm.v2.HelmRelease``: how the server names a CR's schema."""
    return ".".join([*reversed(group.split(".")), version, kind])


def _refs(node: Any, out: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            out.add(ref.rsplit("/", 1)[-1])
        for value in node.values():
            _refs(value, out)
    elif isinstance(node, list):
        for value in node:
            _refs(value, out)


def _closure(defs: Mapping[str, Any], roots: Iterable[str]) -> dict[str, Any]:
    """The definitions ``roots`` reference, transitively (themselves included)."""
    out: dict[str, Any] = {}
    todo = [r for r in roots if r in defs]
    while todo:
        name = todo.pop()
        if name in out:
            continue
        out[name] = defs[name]
        found: set[str] = set()
        _refs(defs[name], found)
        todo.extend(n for n in found if n in defs and n not in out)
    return out


# --------------------------------------------------------------------------- v3 from v2

_V2_REF = "#/definitions/"
_V3_REF = "#/components/schemas/"
_OPERATIONS = ("get", "put", "post", "delete", "options", "head", "patch")


def _v3_refs(node: Any) -> Any:
    """A v2 schema in v3 form: references into components, a ``$ref`` with siblings wrapped in
    ``allOf`` (as the server's v3 documents write them)."""
    if isinstance(node, list):
        return [_v3_refs(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _v3_refs(v) for k, v in node.items() if k != "$ref"}
    if "$ref" in node:
        ref = str(node["$ref"]).replace(_V2_REF, _V3_REF)
        if not out:
            return {"$ref": ref}
        out["allOf"] = [{"$ref": ref}]
    return out


def _v3_parameter(param: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: param[k] for k in ("description", "in", "name", "required") if k in param}
    schema = {k: v for k, v in param.items()
              if k not in ("description", "in", "name", "required")}
    out["schema"] = _v3_refs(schema)
    return out


def _v3_operation(op: Mapping[str, Any], shared: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: copy.deepcopy(v) for k, v in op.items()
                           if k not in ("consumes", "produces", "schemes", "parameters",
                                        "responses")}
    params = []
    for param in op.get("parameters") or []:
        if "$ref" in param:
            param = shared[str(param["$ref"]).rsplit("/", 1)[-1]]
        if param.get("in") == "body":
            body: dict[str, Any] = {"content": {
                media: {"schema": _v3_refs(param.get("schema") or {})}
                for media in op.get("consumes") or ["*/*"]}}
            if param.get("required"):
                body["required"] = True
            out["requestBody"] = body
        else:
            params.append(_v3_parameter(param))
    if params:
        out["parameters"] = params
    responses = {}
    for code, response in (op.get("responses") or {}).items():
        converted: dict[str, Any] = {"description": response.get("description", "")}
        if "schema" in response:
            converted["content"] = {media: {"schema": _v3_refs(response["schema"])}
                                    for media in op.get("produces") or ["application/json"]}
        responses[code] = converted
    out["responses"] = responses
    return out


@functools.cache
def v3_from_swagger(path: str) -> dict[str, Any]:
    """The v3 document of a built-in group-version (``apis/<group>/<version>``) made from the
    upstream v2 document, for a group-version whose v3 file is not vendored: the same paths and
    operations (body parameters as request bodies, media types per response), definitions as
    component schemas."""
    swagger = _swagger()
    prefix = f"/{path}/"
    shared = swagger.get("parameters") or {}
    paths: dict[str, Any] = {}
    for route, item in swagger["paths"].items():
        if not (route.startswith(prefix) or route == prefix):
            continue
        converted: dict[str, Any] = {}
        for key, value in item.items():
            if key in _OPERATIONS:
                converted[key] = _v3_operation(value, shared)
            elif key == "parameters":
                converted[key] = [_v3_parameter(shared[str(p["$ref"]).rsplit("/", 1)[-1]]
                                                if "$ref" in p else p) for p in value]
        paths[route] = converted
    found: set[str] = set()
    _refs(paths, found)
    schemas = {name: _v3_refs(definition) for name, definition in
               _closure(swagger["definitions"], sorted(found)).items()}
    return {
        "components": {"schemas": dict(sorted(schemas.items())),
                       "securitySchemes": copy.deepcopy(swagger.get("securityDefinitions", {}))},
        "info": {"title": "Kubernetes", "version": "unversioned"},
        "openapi": "3.0.0",
        "paths": dict(sorted(paths.items())),
    }


@functools.cache
def v3_from_swagger_bytes(path: str) -> bytes:
    return json.dumps(v3_from_swagger(path), separators=(",", ":"), sort_keys=True).encode()


# --------------------------------------------------------------------------- CRD schemas


class _Crd:
    """One served version of a CRD, as the OpenAPI builder sees it."""

    def __init__(self, crd: Mapping[str, Any], version: Mapping[str, Any]) -> None:
        spec = crd["spec"]
        self.group: str = spec["group"]
        self.version: str = version["name"]
        self.kind: str = spec["names"]["kind"]
        self.list_kind: str = spec["names"].get("listKind") or f"{self.kind}List"
        self.plural: str = spec["names"]["plural"]
        self.namespaced = spec.get("scope", "Namespaced") == "Namespaced"
        subresources = version.get("subresources") or {}
        self.has_status = "status" in subresources
        self.schema: dict[str, Any] = (version.get("schema") or {}).get("openAPIV3Schema") or {
            "type": "object", "x-kubernetes-preserve-unknown-fields": True}
        self.name = crd_definition_name(self.group, self.version, self.kind)
        self.list_name = crd_definition_name(self.group, self.version, self.list_kind)

    def gvk(self, kind: str | None = None) -> dict[str, str]:
        return {"group": self.group, "kind": kind or self.kind, "version": self.version}


def served_crds(crds: Iterable[Mapping[str, Any]]) -> list[_Crd]:
    out = []
    for crd in crds:
        for version in (crd.get("spec") or {}).get("versions") or []:
            if version.get("served", True):
                out.append(_Crd(crd, version))
    return sorted(out, key=lambda c: (c.group, c.version, c.kind))


def _v3_schema(node: Any) -> Any:
    """A CRD schema as the v3 document publishes it (``$ref``-free, unchanged)."""
    return copy.deepcopy(node)


def _v2_schema(node: Any) -> Any:
    """What OpenAPI v2 can express of a structural schema: ``nullable``, ``oneOf``/``anyOf``/
    ``not`` dropped; an int-or-string or nullable field loses its ``type`` and ``items``."""
    if isinstance(node, list):
        return [_v2_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("oneOf", "anyOf", "not", "nullable"):
            continue
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {k: _v2_schema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "allOf"):
            out[key] = _v2_schema(value)
        else:
            out[key] = copy.deepcopy(value)
    if node.get("x-kubernetes-int-or-string") or node.get("nullable"):
        out.pop("type", None)
        out.pop("items", None)
    return out


def _object_schema(c: _Crd, *, v3: bool) -> dict[str, Any]:
    schema = (_v3_schema if v3 else _v2_schema)(c.schema)
    props = schema.setdefault("properties", {})
    props["apiVersion"] = {"description": _API_VERSION_DOC, "type": "string"}
    props["kind"] = {"description": _KIND_DOC, "type": "string"}
    ref = {"$ref": f"#/{'components/schemas' if v3 else 'definitions'}/{_META}.ObjectMeta"}
    props["metadata"] = ({"allOf": [ref], "description": _METADATA_DOC} if v3
                         else {**ref, "description": _METADATA_DOC})
    schema.setdefault("type", "object")
    schema["x-kubernetes-group-version-kind"] = [c.gvk()]
    return schema  # type: ignore[no-any-return]


def _list_schema(c: _Crd, *, v3: bool) -> dict[str, Any]:
    base = "#/components/schemas" if v3 else "#/definitions"
    meta = {"$ref": f"{base}/{_META}.ListMeta"}
    return {
        "description": f"{c.list_kind} is a list of {c.kind}",
        "properties": {
            "apiVersion": {"description": _API_VERSION_DOC, "type": "string"},
            "items": {
                "description": f"List of {c.plural}. More info: https://git.k8s.io/community/"
                               "contributors/devel/api-conventions.md",
                "items": {"$ref": f"{base}/{c.name}"},
                "type": "array",
            },
            "kind": {"description": _KIND_DOC, "type": "string"},
            "metadata": ({"allOf": [meta], "description": _LIST_META_DOC} if v3
                         else {**meta, "description": _LIST_META_DOC}),
        },
        "required": ["items"],
        "type": "object",
        "x-kubernetes-group-version-kind": [c.gvk(c.list_kind)],
    }


def _ops_for(c: _Crd, template: Mapping[str, Any], *, v3: bool) -> dict[str, Any]:
    """The CR's paths, made from the upstream CustomResourceDefinition operations as the
    server's builder makes them from the same route table: names, references and the
    group-version-kind replaced; no strategic merge patch; JSON and YAML only."""
    op_prefix = "".join(p.capitalize() for p in c.group.split(".")) + c.version.capitalize()
    scope = "Namespaced" if c.namespaced else ""
    text = json.dumps({k: v for k, v in template.items()
                       if k.startswith(_CRD_PATH) and "/watch/" not in k})
    base = f"/apis/{c.group}/{c.version}"
    prefix = f"{base}/namespaces/{{namespace}}/{c.plural}" if c.namespaced else \
        f"{base}/{c.plural}"
    for old, new in (
        (f"{_CRD_DEF}List", c.list_name),
        (_CRD_DEF, c.name),
        (_CRD_PATH, prefix),
        ("ApiextensionsV1CollectionCustomResourceDefinition",
         f"{op_prefix}Collection{scope}{c.kind}"),
        ("ApiextensionsV1CustomResourceDefinition", f"{op_prefix}{scope}{c.kind}"),
        ("CustomResourceDefinitionList", c.list_kind),
        ("CustomResourceDefinition", c.kind),
    ):
        text = text.replace(old, new)
    paths: dict[str, Any] = json.loads(text)
    if not c.has_status:
        paths.pop(f"{prefix}/{{name}}/status", None)
    namespace_param: dict[str, Any] = {
        "description": "object name and auth scope, such as for teams and projects",
        "in": "path", "name": "namespace", "required": True, "uniqueItems": True,
    }
    if v3:
        namespace_param["schema"] = {"type": "string", "uniqueItems": True}
        del namespace_param["uniqueItems"]
    else:
        namespace_param["type"] = "string"
    for item in paths.values():
        if c.namespaced:
            item["parameters"] = [*item.get("parameters", []), namespace_param]
            item["parameters"].sort(key=lambda p: p.get("name", p.get("$ref", "")))
        for method, op in item.items():
            if method == "parameters":
                continue
            op["x-kubernetes-group-version-kind"] = c.gvk()
            op["tags"] = [f"{op_prefix[0].lower()}{op_prefix[1:]}"]
            body = op.get("requestBody")
            if isinstance(body, dict):
                body["content"] = {k: v for k, v in body["content"].items()
                                   if k != _STRATEGIC and "cbor" not in k}
            if "consumes" in op:
                op["consumes"] = [k for k in op["consumes"] if k != _STRATEGIC
                                  and "cbor" not in k]
            if "produces" in op:
                op["produces"] = list(_CR_MEDIA)
            for response in (op.get("responses") or {}).values():
                content = response.get("content") if isinstance(response, dict) else None
                if isinstance(content, dict):
                    response["content"] = {k: v for k, v in content.items() if k in _CR_MEDIA}
    if c.namespaced:
        listing = copy.deepcopy(paths[prefix]["get"])
        listing["operationId"] = f"list{op_prefix}{c.kind}ForAllNamespaces"
        listing["description"] = f"list objects of kind {c.kind}"
        params = [p for p in paths[prefix].get("parameters", []) if p.get("name") != "namespace"]
        paths[f"{base}/{c.plural}"] = {"get": listing, "parameters": params}
    return paths


def crd_v3_document(crds: list[_Crd]) -> dict[str, Any]:
    """The v3 document of one CRD group-version (``crds``: its kinds)."""
    template = builtin_v3("apis/apiextensions.k8s.io/v1")
    upstream = template["components"]["schemas"]
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for c in crds:
        paths.update(_ops_for(c, template["paths"], v3=True))
        schemas[c.name] = _object_schema(c, v3=True)
        schemas[c.list_name] = _list_schema(c, v3=True)
    found: set[str] = set()
    _refs(paths, found)
    _refs(schemas, found)
    schemas.update(copy.deepcopy(_closure(upstream, sorted(found))))
    return {
        "components": {"schemas": dict(sorted(schemas.items())),
                       "securitySchemes": copy.deepcopy(
                           template["components"].get("securitySchemes", {}))},
        "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"},
        "openapi": "3.0.0",
        "paths": dict(sorted(paths.items())),
    }


# --------------------------------------------------------------------------- serving


def _accepts_json(accept: str) -> bool:
    if not accept:
        return True
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if media in ("*/*", "application/*", "application/json"):
            return True
    return False


class OpenApi:
    """The ``/openapi/*`` routes over the served types and registered CRDs.

    ``served()`` returns the built-in group-versions the server serves; ``crds()`` the
    registered CustomResourceDefinitions and a value that changes when they do."""

    def __init__(
        self,
        served: Any,
        crds: Any,
    ) -> None:
        self._served = served
        self._crds = crds
        self._lock = threading.Lock()
        self._crd_key: Any = None
        self._crd_docs: dict[str, bytes] = {}
        self._crd_list: list[_Crd] = []
        self._v2: tuple[Any, bytes] | None = None
        self._v2_pb: tuple[Any, bytes, str] | None = None

    def _refresh(self) -> None:
        crds, key = self._crds()
        if key == self._crd_key:
            return
        listed = served_crds(crds)
        by_gv: dict[str, list[_Crd]] = {}
        for c in listed:
            by_gv.setdefault(group_version_path(c.group, c.version), []).append(c)
        self._crd_docs = {
            path: json.dumps(crd_v3_document(kinds), separators=(",", ":")).encode()
            for path, kinds in by_gv.items()
        }
        self._crd_list = listed
        self._crd_key = key

    def _v3_paths(self) -> dict[str, tuple[bytes | None, str]]:
        """Index key -> (bytes if built already, SHA-512 hex)."""
        out: dict[str, tuple[bytes | None, str]] = {}
        builtins = builtin_paths()
        for group, version in self._served():
            path = group_version_path(group, version)
            if path in builtins:
                out[path] = (None, manifest()[builtins[path]]["sha512"])
            elif any(route.startswith(f"/{path}/") for route in _swagger()["paths"]):
                body = v3_from_swagger_bytes(path)
                out[path] = (body, hashlib.sha512(body).hexdigest().upper())
        for path, body in self._crd_docs.items():
            out[path] = (body, hashlib.sha512(body).hexdigest().upper())
        return out

    def handle(self, parts: list[str], query: Mapping[str, str], accept: str) -> Reply:
        with self._lock:
            self._refresh()
            if parts[:2] == ["openapi", "v3"]:
                return self._v3(parts[2:], query)
            if parts == ["openapi", "v2"]:
                return self._v2_reply(accept)
        return _not_found()

    def _v3(self, rest: list[str], query: Mapping[str, str]) -> Reply:
        paths = self._v3_paths()
        if not rest:
            index = {"paths": {
                path: {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
                for path, (_, digest) in sorted(paths.items())
            }}
            return 200, json.dumps(index, separators=(",", ":")).encode(), "application/json", ()
        path = "/".join(rest)
        if path not in paths:
            return _not_found()
        body, digest = paths[path]
        if body is None:
            body = builtin_v3_bytes(path)
        wanted = query.get("hash")
        if wanted and wanted != digest:
            location = f"/openapi/v3/{path}?hash={digest}"
            return 301, b"", "application/json", (("Location", location),)
        cache = "public, immutable" if wanted else "no-cache, private"
        return 200, body, "application/json", (("Cache-Control", cache), ("Etag", f'"{digest}"'))

    def _v2_reply(self, accept: str) -> Reply:
        if _V2_PB in accept.split(",")[0]:
            if self._v2_pb is None or self._v2_pb[0] != self._crd_key:
                from .kube_protobuf import OPENAPI_V2_MEDIA_TYPE, openapi_v2_protobuf

                self._v2_pb = (self._crd_key, openapi_v2_protobuf(self._v2_document()),
                               OPENAPI_V2_MEDIA_TYPE)
            return 200, self._v2_pb[1], self._v2_pb[2], ()
        if not _accepts_json(accept):
            return (406, json.dumps(_status(
                406, "NotAcceptable",
                "only the following media types are accepted: application/json, "
                f"{_V2_PB}@v1.0+protobuf")).encode(), "application/json", ())
        if self._v2 is None or self._v2[0] != self._crd_key:
            self._v2 = (self._crd_key, json.dumps(self._v2_document(),
                                                   separators=(",", ":")).encode())
        return 200, self._v2[1], "application/json", ()

    def _v2_document(self) -> dict[str, Any]:
        upstream = _swagger()
        if not self._crd_list:
            return upstream
        doc = dict(upstream)
        doc["definitions"] = dict(upstream["definitions"])
        doc["paths"] = dict(upstream["paths"])
        for c in self._crd_list:
            doc["definitions"][c.name] = _object_schema(c, v3=False)
            doc["definitions"][c.list_name] = _list_schema(c, v3=False)
            doc["paths"].update(_ops_for(c, upstream["paths"], v3=False))
        return doc


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def _not_found() -> Reply:
    body = json.dumps(_status(404, "NotFound",
                              "the server could not find the requested resource")).encode()
    return 404, body, "application/json", ()
