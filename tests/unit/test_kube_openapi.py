"""The emulator's OpenAPI documents (``/openapi/v2``, ``/openapi/v3``): the vendored upstream
files are intact, and registered CRDs are published as kube-apiserver publishes them, in the
shape kubectl reads (index with ``?hash=`` URLs, PATCH operations with ``fieldValidation``,
component schemas tagged with their group-version-kind)."""

from __future__ import annotations

import gzip
import hashlib
import json
from importlib import resources
from typing import Any

import pytest

from cloudctl.emulate import kube_openapi
from cloudctl.emulate.kube_api import KubeApi
from cloudctl.emulate.kube_reconcile import Controllers
from cloudctl.emulate.kube_store import Store

WIDGETS = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.org"},
    "spec": {
        "group": "example.org",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {"spec": {"type": "object", "properties": {
                    "size": {"type": "integer", "minimum": 1},
                    "port": {"x-kubernetes-int-or-string": True,
                             "anyOf": [{"type": "integer"}, {"type": "string"}]},
                }}},
            }},
        }],
    },
}


@pytest.fixture
def api() -> KubeApi:
    store = Store()
    store.register_crd(WIDGETS)
    return KubeApi(store, Controllers(store), clock=lambda: 0.0)


def _get(api: KubeApi, target: str, accept: str = "application/json") -> tuple[int, Any, Any]:
    resp = api.handle("GET", target, {"Accept": accept}, b"")
    body = json.loads(resp.body) if resp.body else None
    return resp.code, body, dict(resp.headers)


def test_vendored_files_match_the_recorded_upstream_hashes() -> None:
    base = resources.files("cloudctl.emulate").joinpath("data/kubernetes")
    listed = kube_openapi.manifest()
    assert "openapi/v2/swagger.json" in listed and len(listed) >= 13 + 1 + 16
    assert listed["openapi/v2/swagger.json"]["sha256"] == (
        "483500149ee52ce5753d75f5639101d985bb4f5e902cc05b1ba7627465d62446")
    for name, entry in listed.items():
        data = gzip.decompress(base.joinpath(name + ".gz").read_bytes())
        assert len(data) == entry["size"], name
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], name
        assert hashlib.sha512(data).hexdigest().upper() == entry["sha512"], name


def test_v3_index_lists_served_group_versions_with_hashes(api: KubeApi) -> None:
    code, index, _ = _get(api, "/openapi/v3")
    assert code == 200
    paths = index["paths"]
    assert {"api/v1", "apis/apps/v1", "apis/example.org/v1"} <= set(paths)
    # only group-versions the store serves are listed (authentication.k8s.io and
    # authorization.k8s.io are served since the emulator answers their reviews)
    served = {f"apis/{rt.group}/{rt.version}" if rt.group else f"api/{rt.version}"
              for rt in api.store.types()}
    assert set(paths) <= served and "apis/authentication.k8s.io/v1" in paths
    for key in ("api/v1", "apis/example.org/v1"):
        url = paths[key]["serverRelativeURL"]
        resp = api.handle("GET", url, {"Accept": "application/json"}, b"")
        assert resp.code == 200
        assert url.endswith("?hash=" + hashlib.sha512(resp.body).hexdigest().upper())
        assert ("Cache-Control", "public, immutable") in resp.headers
    code, _, headers = _get(api, "/openapi/v3/api/v1?hash=0BAD")
    assert code == 301 and headers["Location"] == paths["api/v1"]["serverRelativeURL"]
    assert _get(api, "/openapi/v3/apis/nothing.example/v9")[0] == 404


def test_builtin_v3_document_is_served_unchanged(api: KubeApi) -> None:
    resp = api.handle("GET", "/openapi/v3/apis/apps/v1", {}, b"")
    assert resp.body == kube_openapi.builtin_v3_bytes("apis/apps/v1")


def _resolve_all(doc: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    kube_openapi._refs(doc, found)
    return found


def test_crd_v3_document_has_patch_with_field_validation_and_gvk_schemas(api: KubeApi) -> None:
    _, doc, _ = _get(api, "/openapi/v3/apis/example.org/v1")
    gvk = {"group": "example.org", "version": "v1", "kind": "Widget"}
    item = doc["paths"]["/apis/example.org/v1/namespaces/{namespace}/widgets/{name}"]
    patch = item["patch"]
    assert patch["x-kubernetes-group-version-kind"] == gvk
    assert patch["operationId"] == "patchExampleOrgV1NamespacedWidget"
    assert "fieldValidation" in {p["name"] for p in patch["parameters"] if p["in"] == "query"}
    assert set(patch["requestBody"]["content"]) == {
        "application/apply-patch+yaml", "application/json-patch+json",
        "application/merge-patch+json"}
    assert {p["name"] for p in item["parameters"]} == {"name", "namespace", "pretty"}
    assert "/apis/example.org/v1/namespaces/{namespace}/widgets/{name}/status" in doc["paths"]
    assert doc["paths"]["/apis/example.org/v1/widgets"]["get"]["operationId"] == (
        "listExampleOrgV1WidgetForAllNamespaces")
    schemas = doc["components"]["schemas"]
    widget = schemas["org.example.v1.Widget"]
    assert widget["x-kubernetes-group-version-kind"] == [gvk]
    assert widget["properties"]["metadata"]["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}]
    assert widget["properties"]["spec"]["properties"]["size"] == {
        "type": "integer", "minimum": 1}
    assert schemas["org.example.v1.WidgetList"]["x-kubernetes-group-version-kind"] == [
        {**gvk, "kind": "WidgetList"}]
    assert _resolve_all(doc) <= set(schemas)  # every reference resolves inside the document
    assert "CustomResourceDefinition" not in json.dumps(doc["paths"])


def test_crd_document_changes_when_crds_change(api: KubeApi) -> None:
    _, before, _ = _get(api, "/openapi/v3")
    crd = json.loads(json.dumps(WIDGETS))
    crd["spec"]["versions"].append({**crd["spec"]["versions"][0], "name": "v2",
                                    "storage": False})
    api.store.register_crd(crd)
    _, after, _ = _get(api, "/openapi/v3")
    assert "apis/example.org/v2" in after["paths"] and "apis/example.org/v2" not in before["paths"]
    api.store.unregister_crd("widgets.example.org")
    _, gone, _ = _get(api, "/openapi/v3")
    assert not any(k.startswith("apis/example.org/") for k in gone["paths"])


def test_v2_is_json_with_crd_definitions_and_other_encodings_are_not_acceptable(
    api: KubeApi,
) -> None:
    code, doc, _ = _get(api, "/openapi/v2", "application/json")
    assert code == 200 and doc["swagger"] == "2.0"
    assert "io.k8s.api.apps.v1.Deployment" in doc["definitions"]
    widget = doc["definitions"]["org.example.v1.Widget"]
    assert widget["x-kubernetes-group-version-kind"] == [
        {"group": "example.org", "version": "v1", "kind": "Widget"}]
    port = widget["properties"]["spec"]["properties"]["port"]
    assert "anyOf" not in port and "type" not in port  # v2 cannot say int-or-string
    patch = doc["paths"]["/apis/example.org/v1/namespaces/{namespace}/widgets/{name}"]["patch"]
    assert "application/strategic-merge-patch+json" not in patch["consumes"]
    code, status, _ = _get(api, "/openapi/v2", "application/vnd.kubernetes.protobuf")
    assert code == 406 and status["reason"] == "NotAcceptable"


def test_nothing_is_loaded_before_the_first_openapi_request() -> None:
    kube_openapi.builtin_v3.cache_clear()
    kube_openapi.builtin_v3_bytes.cache_clear()
    store = Store()
    api = KubeApi(store, Controllers(store), clock=lambda: 0.0)
    api.handle("GET", "/api/v1/namespaces", {}, b"")
    assert kube_openapi.builtin_v3_bytes.cache_info().currsize == 0
    _get(api, "/openapi/v3/api/v1")
    _get(api, "/openapi/v3/api/v1")
    assert kube_openapi.builtin_v3_bytes.cache_info().currsize == 1


def _shape(doc: dict[str, Any]) -> dict[str, Any]:
    """Paths, operations, parameter names, media types and GVKs of a v3 document."""
    out: dict[str, Any] = {}
    for route, item in doc["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                out[(route, "parameters")] = [p["name"] for p in op]
                continue
            out[(route, method)] = (
                [p["name"] for p in op.get("parameters", [])],
                sorted((op.get("requestBody") or {}).get("content", {})),
                {code: sorted(r.get("content", {})) for code, r in op["responses"].items()},
                op.get("x-kubernetes-group-version-kind"), op.get("operationId"),
            )
    out["schemas"] = sorted(doc["components"]["schemas"])
    return out


@pytest.mark.parametrize("path", ["apis/apps/v1", "api/v1", "apis/storage.k8s.io/v1"])
def test_v3_made_from_v2_has_the_shape_of_the_upstream_v3_file(path: str) -> None:
    made, upstream = kube_openapi.v3_from_swagger(path), kube_openapi.builtin_v3(path)
    assert _shape(made) == _shape(upstream)
    # references with siblings are wrapped as the v3 files wrap them
    meta = made["components"]["schemas"]["io.k8s.apimachinery.pkg.apis.meta.v1.Status"][
        "properties"]["metadata"]
    assert meta["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"}]


def test_a_served_group_without_a_vendored_v3_file_gets_one_from_v2(api: KubeApi) -> None:
    _, index, _ = _get(api, "/openapi/v3")
    url = index["paths"]["apis/scheduling.k8s.io/v1"]["serverRelativeURL"]
    code, doc, _ = _get(api, url)
    assert code == 200
    item = doc["paths"]["/apis/scheduling.k8s.io/v1/priorityclasses/{name}"]
    assert item["patch"]["x-kubernetes-group-version-kind"] == {
        "group": "scheduling.k8s.io", "version": "v1", "kind": "PriorityClass"}
    assert "fieldValidation" in {p["name"] for p in item["patch"]["parameters"]}
    assert doc["components"]["schemas"]["io.k8s.api.scheduling.v1.PriorityClass"][
        "x-kubernetes-group-version-kind"] == [
        {"group": "scheduling.k8s.io", "version": "v1", "kind": "PriorityClass"}]
