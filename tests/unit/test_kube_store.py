"""The Kubernetes API emulator's storage core (no sockets): CRUD, server-side apply, patches,
managed fields, CRD registration and custom-resource validation against openAPIV3Schema."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudctl.emulate.kube_fields import PatchError, fields_v1, json_patch, merge_patch
from cloudctl.emulate.kube_store import ApiError, Store
from cloudctl.emulate.kube_types import (
    ResourceType,
    SelectorError,
    field_selector,
    label_selector,
)
from cloudctl.kube.objects import parse_manifests
from cloudctl.resources import read_text


def _rt(store: Store, api_version: str, kind: str) -> ResourceType:
    rt = store.type_of(api_version, kind)
    assert rt is not None, (api_version, kind)
    return rt


def _cm(name: str, data: dict[str, str], labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default"}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def _deployment(name: str, replicas: int = 1, image: str = "nginx:1") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}]},
            },
        },
    }


@pytest.fixture(scope="module")
def flux_crds() -> list[dict[str, Any]]:
    docs = parse_manifests(read_text("flux", "gotk-components-v2.9.3.yaml"), source="gotk")
    return [d for d in docs if d["kind"] == "CustomResourceDefinition"]


def _with_crds(crds: list[dict[str, Any]]) -> Store:
    store = Store()
    crd_rt = _rt(store, "apiextensions.k8s.io/v1", "CustomResourceDefinition")
    for crd in crds:
        store.apply(crd_rt, None, crd["metadata"]["name"], crd, manager="t", force=True)
        store.register_crd(crd)
    ns = _rt(store, "v1", "Namespace")
    store.apply(
        ns,
        None,
        "flux-system",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "flux-system"}},
        manager="t",
        force=True,
    )
    return store


def test_create_get_list_delete_and_status_errors() -> None:
    store = Store()
    cm = _rt(store, "v1", "ConfigMap")
    created = store.create(cm, "default", _cm("a", {"k": "v"}, {"app": "x"}), manager="me")
    meta = created.obj["metadata"]
    assert created.created and meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert int(meta["resourceVersion"]) > 0
    assert store.get(cm, "default", "a")["data"] == {"k": "v"}

    with pytest.raises(ApiError) as exc:
        store.create(cm, "default", _cm("a", {}), manager="me")
    status = exc.value.status()
    assert (status["code"], status["reason"]) == (409, "AlreadyExists")
    assert status["message"] == 'configmaps "a" already exists'

    with pytest.raises(ApiError) as exc:
        store.get(cm, "default", "missing")
    assert exc.value.status()["reason"] == "NotFound"
    assert exc.value.status()["details"] == {"name": "missing", "kind": "configmaps"}

    with pytest.raises(ApiError) as exc:
        store.create(cm, "nowhere", _cm("b", {}) | {"metadata": {"name": "b"}}, manager="me")
    assert exc.value.code == 404 and exc.value.message == 'namespaces "nowhere" not found'

    store.create(cm, "default", _cm("b", {"k": "w"}, {"app": "y"}), manager="me")
    names = [
        o["metadata"]["name"] for o in store.list(cm, "default", label_selector("app=x"))["items"]
    ]
    assert names == ["a"]
    names = [
        o["metadata"]["name"]
        for o in store.list(cm, None, label_selector("app in (x, y),app!=x"))["items"]
    ]
    assert names == ["b"]
    assert [
        o["metadata"]["name"]
        for o in store.list(cm, "default", field_selector("metadata.name=b"))["items"]
    ] == ["b"]
    done = store.delete(cm, "default", "a")
    assert done["status"] == "Success"
    with pytest.raises(ApiError):
        store.delete(cm, "default", "a")


def test_invalid_name_is_422_naming_metadata_name() -> None:
    store = Store()
    with pytest.raises(ApiError) as exc:
        store.create(_rt(store, "v1", "ConfigMap"), "default", _cm("Not_Valid", {}), manager="me")
    status = exc.value.status()
    assert status["code"] == 422 and status["reason"] == "Invalid"
    assert status["details"]["causes"][0]["field"] == "metadata.name"


def test_server_side_apply_is_idempotent_and_tracks_generation() -> None:
    store = Store()
    dep = _rt(store, "apps/v1", "Deployment")
    first = store.apply(dep, "default", "web", _deployment("web"), manager="cloudctl", force=True)
    assert first.created
    rv = first.obj["metadata"]["resourceVersion"]
    assert first.obj["metadata"]["generation"] == 1
    again = store.apply(dep, "default", "web", _deployment("web"), manager="cloudctl", force=True)
    assert not again.created
    assert again.obj["metadata"]["resourceVersion"] == rv  # a no-op apply changes nothing
    assert again.obj["metadata"]["generation"] == 1

    # status written by a controller bumps resourceVersion but not generation
    store.set_status(dep, "default", "web", {"observedGeneration": 1})
    after_status = store.get(dep, "default", "web")["metadata"]
    assert after_status["resourceVersion"] != rv and after_status["generation"] == 1

    changed = store.apply(
        dep, "default", "web", _deployment("web", image="nginx:2"), manager="cloudctl", force=True
    )
    assert changed.obj["metadata"]["generation"] == 2
    managed = changed.obj["metadata"]["managedFields"]
    assert [(m["manager"], m["operation"]) for m in managed] == [("cloudctl", "Apply")]
    assert "f:replicas" in managed[0]["fieldsV1"]["f:spec"]


def test_apply_removes_fields_the_manager_no_longer_applies() -> None:
    store = Store()
    cm = _rt(store, "v1", "ConfigMap")
    store.apply(
        cm,
        "default",
        "c",
        _cm("c", {"a": "1", "b": "2"}, {"l": "x"}),
        manager="cloudctl",
        force=True,
    )
    out = store.apply(cm, "default", "c", _cm("c", {"a": "1"}), manager="cloudctl", force=True)
    assert out.obj["data"] == {"a": "1"}
    assert "labels" not in out.obj["metadata"]


def test_apply_conflict_between_managers_unless_forced() -> None:
    store = Store()
    dep = _rt(store, "apps/v1", "Deployment")
    store.apply(
        dep, "default", "web", _deployment("web", replicas=1), manager="cloudctl", force=False
    )
    # another manager changes replicas with an update: it now owns spec.replicas
    store.patch(dep, "default", "web", "merge", {"spec": {"replicas": 3}}, manager="kubectl")
    with pytest.raises(ApiError) as exc:
        store.apply(
            dep, "default", "web", _deployment("web", replicas=1), manager="cloudctl", force=False
        )
    status = exc.value.status()
    assert status["code"] == 409 and status["reason"] == "Conflict"
    assert 'conflict with "kubectl": .spec.replicas' in status["message"]
    assert status["details"]["causes"][0]["field"] == ".spec.replicas"

    forced = store.apply(
        dep, "default", "web", _deployment("web", replicas=1), manager="cloudctl", force=True
    )
    assert forced.obj["spec"]["replicas"] == 1
    owners = {m["manager"]: m for m in forced.obj["metadata"]["managedFields"]}
    assert "f:replicas" not in owners.get("kubectl", {}).get("fieldsV1", {}).get("f:spec", {})


def test_same_value_from_two_appliers_is_shared_not_a_conflict() -> None:
    store = Store()
    cm = _rt(store, "v1", "ConfigMap")
    store.apply(cm, "default", "c", _cm("c", {"a": "1"}), manager="one", force=False)
    out = store.apply(cm, "default", "c", _cm("c", {"a": "1"}), manager="two", force=False)
    assert {m["manager"] for m in out.obj["metadata"]["managedFields"]} == {"one", "two"}


def test_merge_patch_status_subresource_and_stale_replace() -> None:
    store = Store()
    dep = _rt(store, "apps/v1", "Deployment")
    store.create(dep, "default", _deployment("web"), manager="me")
    out = store.patch(
        dep,
        "default",
        "web",
        "merge",
        {"status": {"replicas": 5}},
        manager="me",
        subresource="status",
    )
    assert out.obj["status"] == {"replicas": 5}
    assert out.obj["metadata"]["generation"] == 1
    # status in a patch of the main resource is ignored (status is a subresource)
    out = store.patch(
        dep,
        "default",
        "web",
        "merge",
        {"status": {"replicas": 9}, "metadata": {"labels": {"x": "y"}}},
        manager="me",
    )
    assert out.obj["status"] == {"replicas": 5}
    assert out.obj["metadata"]["labels"] == {"x": "y"}
    stale = _deployment("web") | {"metadata": {"name": "web", "resourceVersion": "1"}}
    with pytest.raises(ApiError) as exc:
        store.replace(dep, "default", "web", stale, manager="me")
    assert exc.value.code == 409 and "the object has been modified" in exc.value.message


def test_workload_validation_selector_must_match_template() -> None:
    store = Store()
    bad = _deployment("web")
    bad["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    with pytest.raises(ApiError) as exc:
        store.apply(
            _rt(store, "apps/v1", "Deployment"), "default", "web", bad, manager="m", force=True
        )
    assert exc.value.code == 422
    assert [c["field"] for c in exc.value.details["causes"]] == ["spec.template.metadata.labels"]


def test_crd_registers_kinds_and_validates_custom_resources(flux_crds: list[dict]) -> None:
    store = _with_crds(flux_crds)
    hr = _rt(store, "helm.toolkit.fluxcd.io/v2", "HelmRelease")
    assert hr.plural == "helmreleases" and hr.namespaced and hr.has_status
    good = {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": "cilium", "namespace": "flux-system"},
        "spec": {
            "interval": "10m",
            "chart": {
                "spec": {
                    "chart": "cilium",
                    "version": "1.19.6",
                    "sourceRef": {"kind": "HelmRepository", "name": "cilium"},
                }
            },
            "values": {"anything": {"goes": [1, 2]}},
        },
    }
    assert store.apply(hr, "flux-system", "cilium", good, manager="m", force=True).created

    bad = {**good, "spec": {**good["spec"], "interval": 10}}
    with pytest.raises(ApiError) as exc:
        store.apply(hr, "flux-system", "cilium", bad, manager="m", force=True)
    status = exc.value.status()
    assert status["code"] == 422 and status["reason"] == "Invalid"
    assert status["message"].startswith('HelmRelease.helm.toolkit.fluxcd.io "cilium" is invalid:')
    assert [c["field"] for c in status["details"]["causes"]] == ["spec.interval"]
    assert "spec.interval" in status["message"]

    wrong_enum = {
        **good,
        "spec": {
            **good["spec"],
            "chart": {"spec": {"chart": "cilium", "sourceRef": {"kind": "Nope", "name": "x"}}},
        },
    }
    with pytest.raises(ApiError) as exc:
        store.apply(hr, "flux-system", "cilium", wrong_enum, manager="m", force=True)
    assert exc.value.details["causes"][0]["field"] == "spec.chart.spec.sourceRef.kind"


def test_unknown_fields_strict_rejects_warn_prunes(flux_crds: list[dict]) -> None:
    store = _with_crds(flux_crds)
    repo = _rt(store, "source.toolkit.fluxcd.io/v1", "HelmRepository")
    obj = {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "HelmRepository",
        "metadata": {"name": "cilium", "namespace": "flux-system"},
        "spec": {"url": "https://helm.cilium.io/", "interval": "1h", "colour": "blue"},
    }
    with pytest.raises(ApiError) as exc:
        store.apply(
            repo, "flux-system", "cilium", obj, manager="m", force=True, field_validation="Strict"
        )
    assert exc.value.code == 400
    assert 'unknown field "spec.colour"' in exc.value.message
    out = store.apply(repo, "flux-system", "cilium", obj, manager="m", force=True)
    assert "colour" not in out.obj["spec"]
    assert out.warnings == ('unknown field "spec.colour"',)


def test_crd_object_itself_is_validated() -> None:
    store = Store()
    crd_rt = _rt(store, "apiextensions.k8s.io/v1", "CustomResourceDefinition")
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.org",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": True, "storage": True}],
        },
    }
    with pytest.raises(ApiError) as exc:
        store.apply(crd_rt, None, "widgets.example.com", crd, manager="m", force=True)
    assert [c["field"] for c in exc.value.details["causes"]] == ["metadata.name"]


def test_deleting_a_namespace_deletes_its_objects() -> None:
    store = Store()
    ns, cm = _rt(store, "v1", "Namespace"), _rt(store, "v1", "ConfigMap")
    store.create(
        ns,
        None,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tmp"}},
        manager="m",
    )
    store.create(
        cm, "tmp", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}, manager="m"
    )
    store.delete(ns, None, "tmp")
    assert store.lookup(cm, "tmp", "x") is None


def test_patch_helpers() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": [1]}}) == {
        "a": {"c": 2, "d": [1]}
    }
    doc = {"spec": {"items": [1, 2]}}
    out = json_patch(
        doc,
        [
            {"op": "add", "path": "/spec/items/-", "value": 3},
            {"op": "test", "path": "/spec/items", "value": [1, 2, 3]},
        ],
    )
    assert out == {"spec": {"items": [1, 2, 3]}} and doc == {"spec": {"items": [1, 2]}}
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "replace", "path": "/spec/missing", "value": 1}])
    assert fields_v1({("spec", "a"), ("spec", "b", "c")}) == {
        "f:spec": {"f:a": {}, "f:b": {"f:c": {}}}
    }


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=100, deadline=None)
@given(
    target=st.dictionaries(st.text(max_size=3), _json, max_size=4),
    patch=st.dictionaries(st.text(max_size=3), _json, max_size=4),
)
def test_merge_patch_is_idempotent(target: dict[str, Any], patch: dict[str, Any]) -> None:
    once = merge_patch(target, patch)
    assert merge_patch(once, patch) == once


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_label_selector_parses_or_rejects_cleanly(text: str) -> None:
    try:
        match = label_selector(text)
    except SelectorError:
        return
    assert match({"metadata": {"labels": {"a": "b"}}}) in (True, False)
