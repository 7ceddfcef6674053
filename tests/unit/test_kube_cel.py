"""CRD validation rules (CEL, ``x-kubernetes-validations``) in the Kubernetes API emulator:
evaluated with celpy on the emulator's own path (kube_cel, the store), reported with the API
server's field paths, reasons and messages."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from cloudctl.emulate import kube_cel
from cloudctl.emulate.kube_api import KubeApi
from cloudctl.emulate.kube_cel import RuleProblem, RuleSet
from cloudctl.emulate.kube_reconcile import Controllers
from cloudctl.emulate.kube_store import ApiError, Store
from cloudctl.emulate.schemas import served_versions
from cloudctl.kube import parse_manifests
from cloudctl.resources import read_text

HR = "helm.toolkit.fluxcd.io/v2"
HR_MESSAGE = "either chart or chartRef must be set"


def _flux_crds() -> list[dict[str, Any]]:
    docs = parse_manifests(read_text("flux", "gotk-components-v2.9.3.yaml"), source="gotk")
    return [d for d in docs if d.get("kind") == "CustomResourceDefinition"]


def _helmrelease_schema() -> dict[str, Any]:
    for crd in _flux_crds():
        for (group, version, kind), schema in served_versions(crd).items():
            if (group, version, kind) == ("helm.toolkit.fluxcd.io", "v2", "HelmRelease"):
                return schema
    raise AssertionError("no HelmRelease v2 in the vendored Flux install")


def _release(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": HR, "kind": "HelmRelease",
            "metadata": {"name": "r", "namespace": "default"},
            "spec": {"interval": "5m", **spec}}


CHART = {"spec": {"chart": "podinfo", "sourceRef": {"kind": "HelmRepository", "name": "p"}}}
CHART_REF = {"kind": "OCIRepository", "name": "p"}


def test_flux_helmrelease_rule_with_the_servers_message_and_path() -> None:
    rules = RuleSet(_helmrelease_schema())
    assert rules.problems(_release()) == [
        RuleProblem("spec", "FieldValueInvalid", f'Invalid value: "object": {HR_MESSAGE}')]
    assert rules.problems(_release(chart=CHART, chartRef=CHART_REF))[0].path == "spec"
    assert rules.problems(_release(chart=CHART)) == []
    assert rules.problems(_release(chartRef=CHART_REF)) == []


def test_every_rule_of_the_vendored_flux_crds_compiles() -> None:
    rules: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            rules.extend(str(r["rule"]) for r in node.get("x-kubernetes-validations") or [])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(_flux_crds())
    assert len(rules) > 20
    assert [r for r in rules if kube_cel._program(r) is None] == []


def _schema(props: dict[str, Any], rules: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "object", "properties": props}
    if rules:
        spec["x-kubernetes-validations"] = rules
    return {"type": "object", "properties": {"spec": spec}}


def test_transition_rule_runs_on_update_only() -> None:
    schema = _schema({"mode": {"type": "string", "x-kubernetes-validations": [
        {"rule": "self == oldSelf", "message": "mode is immutable"}]}})
    rules = RuleSet(schema)
    new = {"spec": {"mode": "b"}}
    assert rules.problems(new) == []  # create: no oldSelf, the transition rule is skipped
    assert rules.problems(new, {"spec": {"mode": "b"}}) == []
    assert rules.problems(new, {"spec": {"mode": "a"}}) == [
        RuleProblem("spec.mode", "FieldValueInvalid", 'Invalid value: "string": mode is immutable')]
    assert rules.problems(new, {"spec": {}}) == []  # no old value at that path


def test_message_expression_reason_field_path_and_default_message() -> None:
    schema = _schema(
        {"replicas": {"type": "integer"}, "min": {"type": "integer"}},
        [
            {"rule": "self.replicas >= self.min",
             "messageExpression": "'replicas ' + string(self.replicas) + ' below min'"},
            {"rule": "self.replicas < 10", "reason": "FieldValueForbidden",
             "fieldPath": ".replicas", "message": "too many"},
            {"rule": "has(self.min)", "reason": "FieldValueRequired", "message": "min is needed"},
            {"rule": "self.replicas != 7"},
        ],
    )
    rules = RuleSet(schema)
    assert rules.problems({"spec": {"replicas": 11, "min": 12}}) == [
        RuleProblem("spec", "FieldValueInvalid", 'Invalid value: "object": replicas 11 below min'),
        RuleProblem("spec.replicas", "FieldValueForbidden", "Forbidden: too many"),
    ]
    assert rules.problems({"spec": {"replicas": 7}}) == [
        RuleProblem("spec", "FieldValueInvalid",
                    'Invalid value: "object": no such key: min evaluating rule: '
                    "self.replicas >= self.min"),
        RuleProblem("spec", "FieldValueRequired", "Required value: min is needed"),
        RuleProblem("spec", "FieldValueInvalid",
                    'Invalid value: "object": failed rule: self.replicas != 7'),
    ]


def test_root_list_item_and_map_value_paths() -> None:
    item_rule = [{"rule": "self.startsWith('x')", "message": "must start with x"}]
    schema = {
        "type": "object",
        "x-kubernetes-validations": [{"rule": "has(self.spec)", "message": "spec required"}],
        "properties": {"spec": {"type": "object", "properties": {
            "names": {"type": "array", "items": {"type": "string",
                                                  "x-kubernetes-validations": item_rule}},
            "labels": {"type": "object", "additionalProperties": {
                "type": "string", "x-kubernetes-validations": item_rule}},
        }}},
    }
    rules = RuleSet(schema)
    assert [p.path for p in rules.problems({"kind": "X"})] == ["<nil>"]
    got = rules.problems({"spec": {"names": ["xa", "b"], "labels": {"k": "y", "j": "xz"}}})
    assert [p.path for p in got] == ["spec.names[1]", "spec.labels[k]"]


def test_defaults_apply_before_rules() -> None:
    schema = _schema({"provider": {"type": "string", "default": "generic"}},
                     [{"rule": "self.provider == 'generic' || self.provider == 'aws'",
                       "message": "unsupported provider"}])
    rules = RuleSet(schema)
    assert rules.problems({"spec": {}}) == []  # no "no such key": the default is applied
    assert rules.problems({"spec": {"provider": "gcp"}})[0].detail.endswith(
        "unsupported provider")


def test_rules_celpy_cannot_handle_are_skipped_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    schema = _schema({"url": {"type": "string", "x-kubernetes-validations": [
        {"rule": "self.(", "message": "does not parse"},
        {"rule": "isURL(self)", "message": "not a URL"},
        {"rule": "self != ''", "message": "empty"},
    ]}})
    rules = RuleSet(schema)
    with caplog.at_level(logging.WARNING, logger="cloudctl.emulate.kube_cel"):
        assert rules.problems({"spec": {"url": "http://x"}}) == []
        assert rules.problems({"spec": {"url": "also"}}) == []
        assert [p.detail for p in rules.problems({"spec": {"url": ""}})] == [
            'Invalid value: "string": empty']
    skipped = [r.getMessage() for r in caplog.records]
    assert sum("self.(" in m for m in skipped) <= 1 and sum("isURL" in m for m in skipped) <= 1
    kube_cel._skipped.discard("self.(")
    kube_cel._skipped.discard("isURL(self)")


def test_programs_are_compiled_once_per_rule_text() -> None:
    kube_cel._program.cache_clear()
    rules = RuleSet(_helmrelease_schema())
    for _ in range(3):
        rules.problems(_release())
    info = kube_cel._program.cache_info()
    assert info.misses >= 1 and info.hits >= 2 and info.currsize == info.misses


def test_store_and_api_reject_a_helmrelease_without_chart_with_the_cel_message() -> None:
    store = Store()
    for crd in _flux_crds():
        store.register_crd(crd)
    rt = store.type_of(HR, "HelmRelease")
    assert rt is not None
    with pytest.raises(ApiError) as err:
        store.create(rt, "default", _release(), manager="test")
    status = err.value.status()
    assert err.value.code == 422 and status["reason"] == "Invalid"
    assert status["message"] == (
        f'HelmRelease.helm.toolkit.fluxcd.io "r" is invalid: spec: Invalid value: "object": '
        f"{HR_MESSAGE}")
    assert status["details"]["causes"] == [
        {"reason": "FieldValueInvalid", "field": "spec",
         "message": f'Invalid value: "object": {HR_MESSAGE}'}]
    api = KubeApi(store, Controllers(store), clock=lambda: 0.0)
    resp = api.handle("POST", f"/apis/{HR}/namespaces/default/helmreleases",
                      {"Content-Type": "application/json"},
                      json.dumps(_release(chart=CHART)).encode())
    assert resp.code == 201
    broken = _release(chartRef=CHART_REF, chart=CHART)
    resp = api.handle("PUT", f"/apis/{HR}/namespaces/default/helmreleases/r",
                      {"Content-Type": "application/json"}, json.dumps(broken).encode())
    assert resp.code == 422 and json.loads(resp.body)["details"]["causes"][0]["field"] == "spec"


def test_store_runs_transition_rules_against_the_stored_object() -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "volumes.example.org"},
        "spec": {"group": "example.org", "scope": "Namespaced",
                 "names": {"plural": "volumes", "singular": "volume", "kind": "Volume"},
                 "versions": [{"name": "v1", "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": {
                                   "type": "object", "properties": {"spec": {
                                       "type": "object",
                                       "properties": {"size": {"type": "integer"},
                                                      "class": {"type": "string"}},
                                       "x-kubernetes-validations": [
                                           {"rule": "self.class == oldSelf.class",
                                            "message": "class is immutable"},
                                           {"rule": "self.size >= oldSelf.size",
                                            "messageExpression":
                                                "'size may not shrink below ' + "
                                                "string(oldSelf.size)"}]}}}}}]}}
    store = Store()
    store.register_crd(crd)
    api = KubeApi(store, Controllers(store), clock=lambda: 0.0)
    url = "/apis/example.org/v1/namespaces/default/volumes"
    headers = {"Content-Type": "application/json"}

    def volume(size: int, klass: str) -> bytes:
        return json.dumps({"apiVersion": "example.org/v1", "kind": "Volume",
                           "metadata": {"name": "v"},
                           "spec": {"size": size, "class": klass}}).encode()

    assert api.handle("POST", url, headers, volume(10, "fast")).code == 201  # no oldSelf
    assert api.handle("PUT", f"{url}/v", headers, volume(20, "fast")).code == 200
    resp = api.handle("PUT", f"{url}/v", headers, volume(5, "slow"))
    assert resp.code == 422
    causes = json.loads(resp.body)["details"]["causes"]
    assert causes == [
        {"reason": "FieldValueInvalid", "field": "spec",
         "message": 'Invalid value: "object": class is immutable'},
        {"reason": "FieldValueInvalid", "field": "spec",
         "message": 'Invalid value: "object": size may not shrink below 20'}]
    resp = api.handle("PATCH", f"{url}/v", {"Content-Type": "application/merge-patch+json"},
                      json.dumps({"spec": {"size": 30}}).encode())
    assert resp.code == 200
