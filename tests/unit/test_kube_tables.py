"""Server-side Tables of the Kubernetes API emulator: built-in printers, CRD printer columns
(a JSONPath subset), and the API server's human-readable ages."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from cloudctl.emulate.kube_tables import (
    evaluate,
    human_duration,
    parse_jsonpath,
    table,
    wants_table,
)

NOW = dt.datetime(2026, 1, 2, 12, 0, 0, tzinfo=dt.UTC)


def _ago(seconds: int) -> str:
    return (NOW - dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(("seconds", "shown"), [
    (-5, "<invalid>"), (0, "0s"), (119, "119s"), (120, "2m"), (200, "3m20s"), (600, "10m"),
    (179 * 60, "179m"), (3 * 3600, "3h"), (5 * 3600 + 12 * 60, "5h12m"), (30 * 3600, "30h"),
    (3 * 86400 + 4 * 3600, "3d4h"), (10 * 86400, "10d"), (3 * 365 * 86400, "3y"),
])
def test_ages_are_the_servers_human_durations(seconds: int, shown: str) -> None:
    assert human_duration(seconds) == shown


def test_wants_table() -> None:
    assert wants_table("application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
    assert not wants_table("application/json")


def test_jsonpath_subset() -> None:
    obj: dict[str, Any] = {"status": {"conditions": [
        {"type": "Reconciling", "status": "False"},
        {"type": "Ready", "status": "True", "message": "ok"},
    ]}, "spec": {"list": [1, 2, 3], "a.b": "dotted"}}
    assert evaluate(parse_jsonpath('.status.conditions[?(@.type=="Ready")].status'), obj) == [
        "True"]
    assert evaluate(parse_jsonpath(".status.conditions[*].type"), obj) == ["Reconciling", "Ready"]
    assert evaluate(parse_jsonpath(".spec.list[-1]"), obj) == [3]
    assert evaluate(parse_jsonpath("{.spec['a.b']}"), obj) == ["dotted"]
    assert evaluate(parse_jsonpath(".status.missing.deeper"), obj) == []
    with pytest.raises(ValueError):
        parse_jsonpath(".spec..recursive")


def test_crd_printer_columns() -> None:
    hr = {"metadata": {"name": "cilium", "creationTimestamp": _ago(90)},
          "spec": {"replicas": 3.0},
          "status": {"conditions": [{"type": "Ready", "status": "False", "message": "boom"}]}}
    columns: list[dict[str, Any]] = [
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Ready", "type": "string",
         "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        {"name": "Status", "type": "string",
         "jsonPath": '.status.conditions[?(@.type=="Ready")].message'},
        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas", "priority": 1},
        {"name": "Missing", "type": "string", "jsonPath": ".status.nothing"},
    ]
    doc = table("HelmRelease", [hr], "7", NOW, printer_columns=columns)
    names = [(c["name"], c["type"], c["priority"]) for c in doc["columnDefinitions"]]
    assert names == [("Name", "string", 0), ("Age", "date", 0), ("Ready", "string", 0),
                     ("Status", "string", 0), ("Replicas", "integer", 1),
                     ("Missing", "string", 0)]
    assert doc["rows"][0]["cells"] == ["cilium", "90s", "False", "boom", 3, None]
    bare = table("Widget", [hr], "7", NOW, printer_columns=[])
    assert [c["name"] for c in bare["columnDefinitions"]] == ["Name", "Age"]
    assert bare["rows"][0]["cells"] == ["cilium", "90s"]


def test_builtin_printers() -> None:
    dep = {"metadata": {"name": "web", "creationTimestamp": _ago(300)},
           "spec": {"replicas": 3, "selector": {
               "matchLabels": {"app": "web"},
               "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]},
               "template": {"spec": {"containers": [{"name": "c", "image": "nginx:1.27"},
                                                    {"name": "s", "image": "envoy"}]}}},
           "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}
    doc = table("Deployment", [dep], "1", NOW)
    assert [c["name"] for c in doc["columnDefinitions"] if c["priority"] == 1] == [
        "Containers", "Images", "Selector"]
    assert doc["rows"][0]["cells"] == ["web", "2/3", 3, 2, "5m", "c,s", "nginx:1.27,envoy",
                                       "app=web,tier in (a,b)"]
    ns = {"metadata": {"name": "default", "creationTimestamp": _ago(4000)},
          "status": {"phase": "Active"}}
    assert table("Namespace", [ns], "1", NOW)["rows"][0]["cells"] == ["default", "Active", "66m"]
    event = {"metadata": {"name": "web.1"}, "type": "Normal", "reason": "ScalingReplicaSet",
             "involvedObject": {"kind": "Deployment", "name": "web"},
             "source": {"component": "deployment-controller"}, "message": "Scaled up",
             "firstTimestamp": _ago(60), "lastTimestamp": _ago(30), "count": 2}
    cells = table("Event", [event], "1", NOW)["rows"][0]["cells"]
    assert cells == ["30s", "Normal", "ScalingReplicaSet", "deployment/web", "",
                     "deployment-controller", "Scaled up", "60s", 2, "web.1"]
    rows = table("Node", [{"metadata": {"name": "n"}}], "1", NOW,
                 include_object="None")["rows"]
    assert "object" not in rows[0] and rows[0]["cells"][1] == "Unknown"
