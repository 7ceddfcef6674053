"""Field validation and strategic merge patches of built-in objects in the Kubernetes API
emulator, driven by the upstream OpenAPI definitions: ``fieldValidation=Strict|Warn|Ignore``
as the API server's strict decoding answers it, and the strategic merge directives kubectl
sends."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cloudctl.emulate.kube_api import KubeApi
from cloudctl.emulate.kube_reconcile import Controllers
from cloudctl.emulate.kube_store import Store
from cloudctl.emulate.kube_strategic import StrategicPatchError, definition_for, strategic_merge
from cloudctl.emulate.schemas import builtin_unknown_fields

DEPLOY = "/apis/apps/v1/namespaces/default/deployments"


def _deployment(**extra_spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app.kubernetes.io/name": "web"}},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "nginx", "bogus": 1}]},
            },
            **extra_spec,
        },
    }


@pytest.fixture
def api() -> KubeApi:
    store = Store()
    return KubeApi(store, Controllers(store), clock=lambda: 0.0)


def _post(api: KubeApi, body: dict[str, Any], query: str = "") -> tuple[int, Any, dict[str, str]]:
    resp = api.handle("POST", DEPLOY + query, {"Content-Type": "application/json"},
                      json.dumps(body).encode())
    warnings = [v for k, v in resp.headers if k == "Warning"]
    return resp.code, json.loads(resp.body), {"warnings": "\n".join(warnings)}


def test_unknown_fields_follow_the_upstream_definitions() -> None:
    obj = _deployment(foo=1)
    obj["metadata"]["bar"] = "x"
    obj["status"] = {"replicas": 1}
    assert builtin_unknown_fields("apps/v1", "Deployment", obj) == [
        "metadata.bar", "spec.template.spec.containers[0].bogus", "spec.foo"]
    # maps (labels, data) and opaque JSON (a CRD's schema, RawExtension) take any key
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
          "data": {"any.key": "v"}}
    assert builtin_unknown_fields("v1", "ConfigMap", cm) == []
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "x"},
           "spec": {"group": "g", "names": {"kind": "K", "plural": "ks"}, "scope": "Namespaced",
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": {
                                      "type": "object", "default": {"any": ["thing"]},
                                      "properties": {"x": {"type": "string"}}}}}]}}
    assert builtin_unknown_fields("apiextensions.k8s.io/v1", "CustomResourceDefinition",
                                  crd) == []
    assert builtin_unknown_fields("example.org/v1", "Widget", {"x": 1}) == []


def test_strict_rejects_with_the_servers_message(api: KubeApi) -> None:
    code, status, _ = _post(api, _deployment(foo=1), "?fieldValidation=Strict")
    assert code == 400 and status["reason"] == "BadRequest"
    assert status["message"] == (  # in the order of the document, as the decoder meets them
        'Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: '
        'unknown field "spec.template.spec.containers[0].bogus", unknown field "spec.foo"')
    assert api.store.type_of("apps/v1", "Deployment") is not None
    assert _post(api, _deployment(), "?fieldValidation=Strict&dryRun=All")[0] == 400


def test_warn_prunes_and_warns_and_ignore_prunes_silently(api: KubeApi) -> None:
    code, created, warned = _post(api, _deployment(foo=1), "?fieldValidation=Warn")
    assert code == 201
    assert warned["warnings"] == (
        '299 - "unknown field \\"spec.template.spec.containers[0].bogus\\""\n'
        '299 - "unknown field \\"spec.foo\\""')
    assert "foo" not in created["spec"]
    assert created["spec"]["template"]["spec"]["containers"] == [{"name": "app",
                                                                  "image": "nginx"}]
    body = _deployment(foo=1)
    body["metadata"]["name"] = "quiet"
    code, created, warned = _post(api, body, "?fieldValidation=Ignore")
    assert code == 201 and warned["warnings"] == "" and "foo" not in created["spec"]
    body["metadata"]["name"] = "default-is-warn"
    code, _, warned = _post(api, body)
    assert code == 201 and "spec.foo" in warned["warnings"]


POD_SPEC = definition_for("v1", "Pod")


def test_strategic_merge_by_key_order_and_deletes() -> None:
    old = {"spec": {"containers": [{"name": "a", "image": "1", "args": ["x"]},
                                   {"name": "b", "image": "2"}],
                    "volumes": [{"name": "v", "emptyDir": {}}]},
           "metadata": {"finalizers": ["f1"], "labels": {"k": "v", "drop": "me"}}}
    patch = {"metadata": {"finalizers": ["f2"], "labels": {"drop": None}},
             "spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "a"}],
                      "containers": [{"name": "a", "args": ["y"]},
                                     {"name": "c", "image": "3", "stdin": None},
                                     {"$patch": "delete", "name": "b"}]}}
    got = strategic_merge(old, patch, POD_SPEC)
    assert got["spec"]["containers"] == [{"name": "c", "image": "3"},
                                         {"name": "a", "image": "1", "args": ["y"]}]
    assert got["metadata"] == {"finalizers": ["f1", "f2"], "labels": {"k": "v"}}
    assert got["spec"]["volumes"] == [{"name": "v", "emptyDir": {}}]
    assert old["spec"]["containers"][0]["args"] == ["x"]  # the original is not modified


def test_strategic_merge_replace_retain_keys_and_primitive_deletes() -> None:
    old = {"spec": {"containers": [{"name": "a", "image": "1"}],
                    "volumes": [{"name": "v", "emptyDir": {}}]},
           "metadata": {"finalizers": ["f1", "f2"]}}
    patch = {"metadata": {"$deleteFromPrimitiveList/finalizers": ["f1"]},
             "spec": {"volumes": [{"name": "v", "$retainKeys": ["name", "hostPath"],
                                   "hostPath": {"path": "/x"}}],
                      "containers": [{"$patch": "replace"}, {"name": "z", "image": "9"}]}}
    got = strategic_merge(old, patch, POD_SPEC)
    assert got["metadata"]["finalizers"] == ["f2"]
    assert got["spec"]["volumes"] == [{"name": "v", "hostPath": {"path": "/x"}}]
    assert got["spec"]["containers"] == [{"name": "z", "image": "9"}]
    assert strategic_merge(old, {"spec": {"$patch": "replace", "x": 1}}, POD_SPEC)["spec"] == {
        "x": 1}
    with pytest.raises(StrategicPatchError):
        strategic_merge(old, {"spec": {"$patch": "explode"}}, POD_SPEC)


def test_kubectl_style_patch_through_the_api(api: KubeApi) -> None:
    body = _deployment()
    body["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "busybox"})
    del body["spec"]["template"]["spec"]["containers"][0]["bogus"]
    assert _post(api, body, "?fieldValidation=Strict")[0] == 201
    patch = {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "app"}],
        "containers": [{"$patch": "delete", "name": "side"}, {"name": "app", "image": "n:2"}]}}}}
    resp = api.handle("PATCH", f"{DEPLOY}/web?fieldValidation=Strict",
                      {"Content-Type": "application/strategic-merge-patch+json"},
                      json.dumps(patch).encode())
    assert resp.code == 200, resp.body
    assert json.loads(resp.body)["spec"]["template"]["spec"]["containers"] == [
        {"name": "app", "image": "n:2"}]


def test_server_side_apply_takes_over_client_side_apply_fields(api: KubeApi) -> None:
    """kubectl apply --server-side after kubectl apply: no conflict for fields the
    last-applied-configuration annotation holds (the server's lastAppliedManager), and the
    managedFields kubectl then writes with a JSON patch replace the managers."""
    body = _deployment()
    del body["spec"]["template"]["spec"]["containers"][0]["bogus"]
    body["spec"]["replicas"] = 1
    body["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": json.dumps(body)}
    resp = api.handle("POST", f"{DEPLOY}?fieldManager=kubectl-client-side-apply",
                      {"Content-Type": "application/json"}, json.dumps(body).encode())
    assert resp.code == 201
    applied = {**body, "spec": {**body["spec"], "replicas": 3}}
    del applied["metadata"]["annotations"]
    headers = {"Content-Type": "application/apply-patch+yaml"}
    resp = api.handle("PATCH", f"{DEPLOY}/web?fieldManager=other", headers,
                      json.dumps(applied).encode())
    assert resp.code == 409  # another manager conflicts as before
    resp = api.handle("PATCH", f"{DEPLOY}/web?fieldManager=kubectl", headers,
                      json.dumps(applied).encode())
    assert resp.code == 200 and json.loads(resp.body)["spec"]["replicas"] == 3
    api.handle("GET", f"{DEPLOY}/web", {}, b"")  # the controllers settle the status
    live = json.loads(api.handle("GET", f"{DEPLOY}/web", {}, b"").body)
    kept = [m for m in live["metadata"]["managedFields"] if m["manager"] == "kubectl"]
    patch = [{"op": "test", "path": "/metadata/resourceVersion",
              "value": live["metadata"]["resourceVersion"]},
             {"op": "replace", "path": "/metadata/managedFields", "value": kept}]
    resp = api.handle("PATCH", f"{DEPLOY}/web", {"Content-Type": "application/json-patch+json"},
                      json.dumps(patch).encode())
    assert resp.code == 200, resp.body
    owners = [(m["manager"], m["operation"])
              for m in json.loads(resp.body)["metadata"]["managedFields"]]
    assert owners == [("kubectl", "Apply")]
    assert kept[0]["fieldsV1"]["f:spec"]["f:replicas"] == {}


RAW_DUPLICATES = (b'{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x", '
                  b'"name": "dup"}, "spec": {"replicas": 1, "replicas": 2, "foo": 1, '
                  b'"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": '
                  b'{"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", '
                  b'"image": "nginx", "image": "nginx:2"}]}}}}')


def test_duplicate_fields_strict_warn_and_ignore(api: KubeApi) -> None:
    json_headers = {"Content-Type": "application/json"}
    resp = api.handle("POST", f"{DEPLOY}?fieldValidation=Strict", json_headers, RAW_DUPLICATES)
    assert resp.code == 400
    assert json.loads(resp.body)["message"] == (
        'Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: '
        'duplicate field "metadata.name", duplicate field "spec.replicas", '
        'duplicate field "spec.template.spec.containers[0].image", unknown field "spec.foo"')
    resp = api.handle("POST", DEPLOY, json_headers, RAW_DUPLICATES)  # Warn by default
    assert resp.code == 201
    warnings = [v for k, v in resp.headers if k == "Warning"]
    assert '299 - "duplicate field \\"spec.replicas\\""' in warnings
    assert '299 - "unknown field \\"spec.foo\\""' in warnings
    created = json.loads(resp.body)
    assert created["metadata"]["name"] == "dup" and created["spec"]["replicas"] == 2  # last wins
    api.handle("DELETE", f"{DEPLOY}/dup", {}, b"")
    resp = api.handle("POST", f"{DEPLOY}?fieldValidation=Ignore", json_headers, RAW_DUPLICATES)
    assert resp.code == 201 and not [v for k, v in resp.headers if k == "Warning"]


def test_custom_resources_are_pruned_field_by_field() -> None:
    port = {"type": "object",
            "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}
    spec = {"type": "object", "properties": {"ports": {"type": "array", "items": port}}}
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.org"},
        "spec": {"group": "example.org", "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": {
                                   "type": "object", "properties": {"spec": spec}}}}]}}
    store = Store()
    store.register_crd(crd)
    api = KubeApi(store, Controllers(store), clock=lambda: 0.0)
    body = {"apiVersion": "example.org/v1", "kind": "Widget",
            "metadata": {"name": "w", "bogusMeta": 1},
            "spec": {"ports": [{"name": "http", "port": 80, "typo": True}]}, "extra": 1}
    resp = api.handle("POST", "/apis/example.org/v1/namespaces/default/widgets",
                      {"Content-Type": "application/json"}, json.dumps(body).encode())
    assert resp.code == 201
    created = json.loads(resp.body)
    assert created["spec"] == {"ports": [{"name": "http", "port": 80}]}
    assert "extra" not in created and "bogusMeta" not in created["metadata"]
    warnings = [v for k, v in resp.headers if k == "Warning"]
    assert '299 - "unknown field \\"spec.ports[0].typo\\""' in warnings
