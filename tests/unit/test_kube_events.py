"""Events recorded from the emulator's store changes as the controllers record them, and the
field selectors ``kubectl describe`` lists them with."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from cloudctl.emulate.kube_events import EventRecorder
from cloudctl.emulate.kube_store import Store
from cloudctl.emulate.kube_types import ResourceType, SelectorError, field_selector
from cloudctl.kube import parse_manifests
from cloudctl.resources import read_text

NOW = dt.datetime(2026, 1, 2, 12, 0, 0, tzinfo=dt.UTC)


def _rt(store: Store, api_version: str, kind: str) -> ResourceType:
    rt = store.type_of(api_version, kind)
    assert rt is not None
    return rt


def _events(store: Store, api_version: str = "v1") -> list[dict[str, Any]]:
    return list(store.list(_rt(store, api_version, "Event"), None)["items"])


def _node(store: Store, ready: str) -> None:
    rt = _rt(store, "v1", "Node")
    if store.lookup(rt, None, "w1") is None:
        store.create(rt, None, {"metadata": {"name": "w1"}}, manager="kubelet")
    store.set_status(rt, None, "w1", {"conditions": [{"type": "Ready", "status": ready}]})


def test_node_ready_as_the_kubelet_records_it() -> None:
    store = Store()
    recorder = EventRecorder(store, lambda: NOW)
    _node(store, "False")
    recorder.observe()
    assert _events(store) == []
    _node(store, "True")
    recorder.observe()
    (event,) = _events(store)
    assert (event["type"], event["reason"], event["message"]) == (
        "Normal", "NodeReady", "Node w1 status is now: NodeReady")
    assert event["involvedObject"] == {"kind": "Node", "name": "w1", "apiVersion": "v1",
                                       "uid": "w1",
                                       "resourceVersion": event["involvedObject"][
                                           "resourceVersion"]}
    assert event["source"] == {"component": "kubelet", "host": "w1"}
    assert event["metadata"]["namespace"] == "default" and event["count"] == 1
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2026-01-02T12:00:00Z"
    (new,) = _events(store, "events.k8s.io/v1")
    assert new["metadata"]["name"] == event["metadata"]["name"]
    assert (new["note"], new["regarding"]["name"], new["reportingController"]) == (
        event["message"], "w1", "kubelet")
    _node(store, "Unknown")
    recorder.observe()
    gone = [e for e in _events(store) if e["reason"] == "NodeNotReady"]
    assert [(e["message"], e["source"]) for e in gone] == [
        ("Node w1 status is now: NodeNotReady", {"component": "node-controller"})]


def _release(store: Store, status: dict[str, Any]) -> None:
    if store.type_of("helm.toolkit.fluxcd.io/v2", "HelmRelease") is None:
        docs = parse_manifests(read_text("flux", "gotk-components-v2.9.3.yaml"), source="gotk")
        store.register_crd(next(d for d in docs if d["metadata"]["name"] ==
                                "helmreleases.helm.toolkit.fluxcd.io"))
    rt = _rt(store, "helm.toolkit.fluxcd.io/v2", "HelmRelease")
    if store.lookup(rt, "flux-system", "cilium") is None:
        store.create(_rt(store, "v1", "Namespace"), None, {"metadata": {"name": "flux-system"}},
                     manager="t")
        store.create(rt, "flux-system", {"metadata": {"name": "cilium"}, "spec": {
            "interval": "10m", "chart": {"spec": {"chart": "cilium", "sourceRef": {
                "kind": "HelmRepository", "name": "charts"}}}}}, manager="t")
    store.set_status(rt, "flux-system", "cilium", status)


def _ready(status: str, reason: str, message: str) -> dict[str, Any]:
    return {"type": "Ready", "status": status, "reason": reason, "message": message}


def test_helm_controller_reasons_and_repeats() -> None:
    store = Store()
    recorder = EventRecorder(store, lambda: NOW)
    _release(store, {"conditions": [_ready("Unknown", "Progressing", "installing")]})
    recorder.observe()
    assert _events(store) == []
    failed = _ready("False", "InstallFailed", "Helm install failed: boom")
    _release(store, {"conditions": [failed], "installFailures": 1})
    recorder.observe()
    _release(store, {"conditions": [failed], "installFailures": 2})  # failed once more
    recorder.observe()
    (event,) = _events(store)
    assert (event["type"], event["reason"], event["count"]) == ("Warning", "InstallFailed", 2)
    assert event["involvedObject"]["kind"] == "HelmRelease"
    assert event["source"] == {"component": "helm-controller"}
    ok = _ready("True", "InstallSucceeded", "Helm install succeeded")
    _release(store, {"conditions": [ok], "lastAttemptedRevision": "1.0.0"})
    recorder.observe()
    by_reason = {e["reason"]: e for e in _events(store)}
    assert by_reason["InstallSucceeded"]["type"] == "Normal"
    assert by_reason["InstallSucceeded"]["metadata"]["annotations"] == {
        "helm.toolkit.fluxcd.io/revision": "1.0.0"}


def test_scaling_replica_set_on_its_deployment() -> None:
    store = Store()
    recorder = EventRecorder(store, lambda: NOW)
    dep = store.create(_rt(store, "apps/v1", "Deployment"), "default", {
        "metadata": {"name": "web"}, "spec": {
            "replicas": 2, "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}},
                         "spec": {"containers": [{"name": "c", "image": "i"}]}}}},
        manager="t").obj
    rs_rt = _rt(store, "apps/v1", "ReplicaSet")
    owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
             "uid": dep["metadata"]["uid"], "controller": True}
    store.create(rs_rt, "default", {"metadata": {"name": "web-abc", "ownerReferences": [owner]},
                                    "spec": {"replicas": 2}}, manager="t")
    store.patch(rs_rt, "default", "web-abc", "merge", {"spec": {"replicas": 1}}, manager="t")
    recorder.observe()
    messages = sorted(e["message"] for e in _events(store))
    assert messages == ["Scaled down replica set web-abc from 2 to 1",
                        "Scaled up replica set web-abc from 0 to 2"]
    assert {e["involvedObject"]["uid"] for e in _events(store)} == {dep["metadata"]["uid"]}


def test_field_selectors_describe_uses() -> None:
    event = {"metadata": {"name": "e", "namespace": "default"}, "type": "Normal",
             "reason": "NodeReady", "source": {"component": "kubelet"},
             "involvedObject": {"kind": "Node", "name": "w1", "uid": "w1"}}
    match = field_selector("involvedObject.name=w1,involvedObject.namespace=,"
                           "involvedObject.kind=Node,involvedObject.uid=w1", "Event")
    assert match(event)
    assert not field_selector("involvedObject.uid=other", "Event")(event)
    assert field_selector("source=kubelet,type!=Warning,reason=NodeReady", "Event")(event)
    deployment_event = {"metadata": {"name": "e"}, "reason": "a,b=c",
                        "involvedObject": {"kind": "Deployment", "apiVersion": "apps/v1"}}
    assert field_selector("involvedObject.kind=Deployment,involvedObject.apiVersion=apps/v1,"
                          "reason=a\\,b\\=c", "Event")(deployment_event)
    with pytest.raises(SelectorError, match="can't understand it"):
        field_selector("involvedObject.kind", "Event")
    new_style = {"metadata": {"name": "e"}, "regarding": {"kind": "Node", "name": "w1"}}
    assert field_selector("involvedObject.name=w1", "Event")(new_style)
    pod = {"metadata": {"name": "p"}, "spec": {"nodeName": "w1"},
           "status": {"phase": "Running"}}
    assert field_selector("spec.nodeName=w1,status.phase!=Succeeded,status.phase!=Failed",
                          "Pod")(pod)
    with pytest.raises(SelectorError, match=r"field label not supported: spec\.nodeName"):
        field_selector("spec.nodeName=w1", "ConfigMap")
    with pytest.raises(SelectorError, match=r"field label not supported: involvedObject\.name"):
        field_selector("involvedObject.name=x", "Pod")
    assert field_selector("metadata.name=p", "Widget")(pod)
