"""The emulator's HTTP layer without sockets: discovery documents, routing, request decoding,
and the Status errors the API server returns."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cloudctl.emulate.kube_api import KubeApi, Response
from cloudctl.emulate.kube_reconcile import Controllers
from cloudctl.emulate.kube_store import Store

JSON = {"Content-Type": "application/json", "User-Agent": "test-agent/1.0"}


@pytest.fixture
def api() -> KubeApi:
    store = Store()
    now = [0.0]
    return KubeApi(store, Controllers(store), version="v1.34.1", clock=lambda: now[0])


def _call(
    api: KubeApi, method: str, target: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    resp: Response = api.handle(method, target, headers or JSON, data)
    return resp.code, json.loads(
        resp.body
    ) if resp.content_type == "application/json" else resp.body


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.org"},
    "spec": {
        "group": "example.org",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1},
                                    "colour": {"type": "string", "enum": ["red", "blue"]},
                                },
                            }
                        },
                    }
                },
            }
        ],
    },
}


def test_discovery_documents(api: KubeApi) -> None:
    code, version = _call(api, "GET", "/version")
    assert code == 200 and (version["major"], version["minor"]) == ("1", "34")
    assert _call(api, "GET", "/api")[1]["versions"] == ["v1"]
    core = _call(api, "GET", "/api/v1")[1]
    names = {r["name"]: r for r in core["resources"]}
    assert names["configmaps"]["namespaced"] and not names["nodes"]["namespaced"]
    assert "namespaces/status" in names
    groups = {g["name"]: g for g in _call(api, "GET", "/apis")[1]["groups"]}
    assert groups["apps"]["preferredVersion"]["groupVersion"] == "apps/v1"
    assert "example.org" not in groups
    code, status = _call(api, "GET", "/apis/example.org/v1")
    assert code == 404 and status["kind"] == "Status"


def test_crd_establishes_then_serves_and_validates(api: KubeApi) -> None:
    code, _ = _call(api, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", CRD)
    assert code == 201
    widgets = _call(api, "GET", "/apis/example.org/v1")[1]["resources"]
    assert [r["name"] for r in widgets] == ["widgets", "widgets/status"]
    crd = _call(
        api, "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.org"
    )[1]
    assert {c["type"]: c["status"] for c in crd["status"]["conditions"]}["Established"] == "True"
    base = "/apis/example.org/v1/namespaces/default/widgets"
    obj = {
        "apiVersion": "example.org/v1",
        "kind": "Widget",
        "metadata": {"name": "w"},
        "spec": {"size": 0, "colour": "green"},
    }
    code, status = _call(api, "POST", base, obj)
    assert code == 422 and status["reason"] == "Invalid"
    assert sorted(c["field"] for c in status["details"]["causes"]) == ["spec.colour", "spec.size"]
    assert status["message"].startswith('Widget.example.org "w" is invalid: [')
    obj["spec"] = {"size": 2, "colour": "red"}
    assert _call(api, "POST", base, obj)[0] == 201
    # apply YAML text; strategic merge is refused for custom resources, as the API server does
    yaml_body = b"apiVersion: example.org/v1\nkind: Widget\nmetadata: {name: w}\nspec: {size: 3}\n"
    code, out = _call(
        api,
        "PATCH",
        f"{base}/w?fieldManager=me&force=true",
        yaml_body,
        {"Content-Type": "application/apply-patch+yaml"},
    )
    assert code == 200 and out["spec"] == {"size": 3, "colour": "red"}
    code, _ = _call(
        api,
        "PATCH",
        f"{base}/w",
        {"spec": {"size": 4}},
        {"Content-Type": "application/strategic-merge-patch+json"},
    )
    assert code == 415
    code, out = _call(
        api,
        "PATCH",
        f"{base}/w/status",
        {"status": {"phase": "ok"}},
        {"Content-Type": "application/merge-patch+json"},
    )
    assert code == 200 and out["status"] == {"phase": "ok"}
    # deleting the CRD removes its kind and objects
    _call(
        api, "DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.org"
    )
    assert _call(api, "GET", base)[0] == 404


def test_errors_look_like_the_api_server(api: KubeApi) -> None:
    code, status = _call(api, "GET", "/api/v1/namespaces/default/configmaps/x")
    assert (code, status["reason"], status["message"]) == (
        404,
        "NotFound",
        'configmaps "x" not found',
    )
    code, status = _call(api, "GET", "/api/v1/namespaces/default/configmaps?watch=true&"
                         "resourceVersionMatch=NotOlderThan")
    assert (code, status["reason"]) == (422, "Invalid")
    assert status["message"].endswith("resourceVersionMatch is forbidden for watch unless "
                                      "sendInitialEvents is provided")
    code, status = _call(api, "GET", "/api/v1/namespaces/default/configmaps?labelSelector=a%20b")
    assert code == 400 and status["reason"] == "BadRequest"
    code, status = _call(
        api, "PATCH", "/api/v1/namespaces/default/configmaps/x", {}, {"Content-Type": "text/plain"}
    )
    assert code == 415
    code, status = _call(
        api,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/x",
        {"a": 1},
        {"Content-Type": "application/apply-patch+yaml"},
    )
    assert code == 400 and "fieldManager" in status["message"]
    code, status = _call(
        api,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        {"apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "a"}},
    )
    assert code == 400 and "do not match" in status["message"]
    code, status = _call(api, "POST", "/api/v1/namespaces/default/configmaps", b"{not json")
    assert code == 400


def test_create_uses_user_agent_as_manager_and_dry_run_stores_nothing(api: KubeApi) -> None:
    cm = {"metadata": {"name": "a"}, "data": {"k": "v"}}
    code, out = _call(api, "POST", "/api/v1/namespaces/default/configmaps?dryRun=All", cm)
    assert code == 201 and out["metadata"]["name"] == "a"
    assert _call(api, "GET", "/api/v1/namespaces/default/configmaps/a")[0] == 404
    code, out = _call(api, "POST", "/api/v1/namespaces/default/configmaps", cm)
    assert out["metadata"]["managedFields"][0]["manager"] == "test-agent"
    listed = _call(api, "GET", "/api/v1/configmaps")[1]
    assert listed["kind"] == "ConfigMapList" and len(listed["items"]) == 1
    assert int(listed["metadata"]["resourceVersion"]) >= int(out["metadata"]["resourceVersion"])


def test_scale_subresource_and_tables(api: KubeApi) -> None:
    labels = {"app": "web"}
    _call(api, "POST", "/apis/apps/v1/namespaces/default/deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
    })
    code, scale = _call(api, "GET", "/apis/apps/v1/namespaces/default/deployments/web/scale")
    assert code == 200 and (scale["kind"], scale["apiVersion"]) == ("Scale", "autoscaling/v1")
    assert scale["spec"] == {"replicas": 2} and scale["status"]["selector"] == "app=web"
    merge = {**JSON, "Content-Type": "application/merge-patch+json"}
    code, scale = _call(api, "PATCH", "/apis/apps/v1/namespaces/default/deployments/web/scale",
                        {"spec": {"replicas": 4}}, merge)
    assert code == 200 and scale["spec"]["replicas"] == 4
    code, status = _call(api, "PATCH", "/apis/apps/v1/namespaces/default/deployments/web/scale",
                         {"spec": {"replicas": -1}}, merge)
    assert code == 422 and status["reason"] == "Invalid"
    _, apps = _call(api, "GET", "/apis/apps/v1")
    assert any(r["name"] == "deployments/scale" and r["group"] == "autoscaling"
               for r in apps["resources"])
    table = {**JSON, "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}
    code, listed = _call(api, "GET", "/apis/apps/v1/namespaces/default/deployments",
                         headers=table)
    assert code == 200 and listed["kind"] == "Table"
    assert [c["name"] for c in listed["columnDefinitions"]][:2] == ["Name", "Ready"]
    assert listed["rows"][0]["cells"][:2] == ["web", "4/4"]  # no Node: ready at once
    assert listed["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
