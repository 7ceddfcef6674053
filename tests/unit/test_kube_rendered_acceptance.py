"""What cloudctl renders passes the API server's checks as the emulator makes them on its own
path (upstream OpenAPI definitions, the CRDs' structural schemas and CEL rules), and a rendered
object a real server would reject is rejected with the server's status code and field path
(issue 13, item 3)."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudctl.emulate.kube_api import KubeApi
from cloudctl.emulate.kube_reconcile import Controllers
from cloudctl.emulate.kube_store import Store
from cloudctl.emulate.schemas import builtin_unknown_fields
from cloudctl.inventory import load_inventory
from cloudctl.render.gitops import render_gitops

REPO = Path(__file__).resolve().parents[2]
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def _rendered() -> tuple[tuple[str, dict[str, Any]], ...]:
    inv = load_inventory(str(REPO / "inventory.example.yaml")).inventory
    out = []
    for path, rendered in sorted(render_gitops(inv).items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        data = rendered.data
        text = data.decode("utf-8") if isinstance(data, bytes) else str(data)
        for doc in yaml.load_all(text, Loader=_Loader):
            if isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc:
                out.append((path, doc))
    return tuple(out)


def _store() -> Store:
    store = Store()
    for _, doc in _rendered():
        if doc["kind"] == "CustomResourceDefinition":
            store.register_crd(doc)
    return store


def test_every_rendered_object_passes_the_servers_schema_checks() -> None:
    store = _store()
    checked: dict[str, int] = {}
    problems = []
    for path, doc in _rendered():
        rt = store.type_of(doc["apiVersion"], doc["kind"])
        if rt is None:
            continue  # a CRD that a release installs later (not in the tree)
        if rt.crd is None:
            found = [("unknown field", p) for p in
                     builtin_unknown_fields(doc["apiVersion"], doc["kind"], copy.deepcopy(doc))]
        else:
            found = [*store.crds.validate(doc),
                     *((p.path, p.detail) for p in store.crds.rule_problems(doc))]
        problems += [(path, doc["kind"], doc["metadata"].get("name"), p) for p in found]
        checked[doc["kind"]] = checked.get(doc["kind"], 0) + 1
    assert problems == []
    assert {"HelmRelease", "HelmRepository", "Namespace", "Deployment",
            "CustomResourceDefinition", "ClusterRole"} <= set(checked)


def _first(kind: str) -> dict[str, Any]:
    return copy.deepcopy(next(doc for _, doc in _rendered() if doc["kind"] == kind))


@pytest.fixture
def api() -> KubeApi:
    store = _store()
    return KubeApi(store, Controllers(store), clock=lambda: 0.0)


def _create(api: KubeApi, doc: dict[str, Any], query: str = "") -> tuple[int, dict[str, Any]]:
    rt = api.store.type_of(doc["apiVersion"], doc["kind"])
    assert rt is not None
    namespace = doc["metadata"].get("namespace")
    if namespace and api.store.type_of("v1", "Namespace") is not None:
        api.handle("POST", "/api/v1/namespaces", {"Content-Type": "application/json"},
                   json.dumps({"metadata": {"name": namespace}}).encode())
    base = f"/apis/{rt.group}/{rt.version}" if rt.group else f"/api/{rt.version}"
    scope = f"/namespaces/{namespace}" if rt.namespaced else ""
    resp = api.handle("POST", f"{base}{scope}/{rt.plural}{query}",
                      {"Content-Type": "application/json"}, json.dumps(doc).encode())
    return resp.code, json.loads(resp.body)


def test_rendered_objects_are_accepted_and_broken_ones_rejected_as_a_server_does(
    api: KubeApi,
) -> None:
    release = _first("HelmRelease")
    assert _create(api, release, "?fieldValidation=Strict")[0] == 201
    broken = _first("HelmRelease")
    broken["metadata"]["name"] = "no-chart"
    broken["spec"].pop("chart", None)
    broken["spec"].pop("chartRef", None)
    code, status = _create(api, broken, "?fieldValidation=Strict")
    assert code == 422 and status["reason"] == "Invalid"
    assert status["details"]["causes"] == [{
        "reason": "FieldValueInvalid", "field": "spec",
        "message": 'Invalid value: "object": either chart or chartRef must be set'}]
    deployment = _first("Deployment")
    deployment["spec"]["replica"] = 3  # a typo
    code, status = _create(api, deployment, "?fieldValidation=Strict")
    assert code == 400 and status["reason"] == "BadRequest"
    assert status["message"] == (
        'Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: '
        'unknown field "spec.replica"')
    namespace = _first("Namespace")
    namespace["metadata"]["name"] = "Not_A_Name"
    code, status = _create(api, namespace)
    assert code == 422 and status["details"]["causes"][0]["field"] == "metadata.name"
