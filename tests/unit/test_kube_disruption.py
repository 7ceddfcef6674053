"""PodDisruptionBudget arithmetic, the eviction decision and the pods/eviction subresource of the
Kubernetes API emulator (sans-IO: ``KubeApi.handle`` with a test clock)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cloudctl.emulate.kube_api import KubeApi
from cloudctl.emulate.kube_disruption import (
    EVICTION_REFUSED,
    MULTIPLE_PDBS,
    budget_status,
    decide_eviction,
    pdb_causes,
    scaled_value,
)
from cloudctl.emulate.kube_reconcile import Controllers
from cloudctl.emulate.kube_store import Store


def _pod(name: str, ready: bool = True, phase: str = "Running", owner: str = "rs1") -> dict:
    return {
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"app": "web"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": owner, "uid": owner,
                                 "controller": True}],
        },
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def _pdb(spec: dict[str, Any], status: dict[str, Any] | None = None, name: str = "web") -> dict:
    return {
        "metadata": {"name": name, "namespace": "default", "generation": 1},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, **spec},
        "status": {"observedGeneration": 1, **(status or {})},
    }


# --------------------------------------------------------------------------- arithmetic


@pytest.mark.parametrize(
    ("value", "total", "up", "want"),
    [(1, 10, True, 1), ("50%", 3, True, 2), ("50%", 3, False, 1), ("10%", 5, True, 1),
     ("10%", 5, False, 0), ("100%", 7, True, 7), ("0%", 4, True, 0)],
)
def test_scaled_value_rounds_as_intstr(value: int | str, total: int, up: bool, want: int) -> None:
    assert scaled_value(value, total, round_up=up) == want


def test_scaled_value_rejects_non_percent_strings() -> None:
    with pytest.raises(ValueError):
        scaled_value("5", 10, round_up=True)


def test_min_available_int_counts_selected_pods() -> None:
    pods = [_pod("a"), _pod("b"), _pod("c", ready=False)]
    s = budget_status({"minAvailable": 1}, pods, {})
    assert (s.expected_pods, s.desired_healthy, s.current_healthy, s.disruptions_allowed) == (
        3, 1, 2, 1)


def test_max_unavailable_percent_rounds_up_over_the_controller_scale() -> None:
    pods = [_pod(n) for n in "abcd"]
    scale = {n: 4 for n in "abcd"}
    # 4 replicas, maxUnavailable 30% -> ceil(1.2) = 2 unavailable -> desiredHealthy 2
    s = budget_status({"maxUnavailable": "30%"}, pods, scale)
    assert (s.expected_pods, s.desired_healthy, s.disruptions_allowed) == (4, 2, 2)
    # minAvailable 30% -> ceil(1.2) = 2 healthy needed
    s = budget_status({"minAvailable": "30%"}, pods, scale)
    assert (s.desired_healthy, s.disruptions_allowed) == (2, 2)


def test_max_unavailable_zero_allows_nothing() -> None:
    pods = [_pod("a"), _pod("b")]
    s = budget_status({"maxUnavailable": 0}, pods, {"a": 2, "b": 2})
    assert (s.desired_healthy, s.current_healthy, s.disruptions_allowed) == (2, 2, 0)
    st = s.as_status(1)
    assert st["conditions"][0]["status"] == "False"
    assert st["conditions"][0]["reason"] == "InsufficientPods"


def test_disrupted_pods_do_not_count_healthy() -> None:
    pods = [_pod("a"), _pod("b"), _pod("c")]
    s = budget_status({"minAvailable": 1}, pods, {}, disrupted=("a",))
    assert (s.current_healthy, s.disruptions_allowed) == (2, 1)


def test_percent_without_a_scalable_controller_fails_the_sync() -> None:
    s = budget_status({"maxUnavailable": 1}, [_pod("a")], {"a": None})
    assert s.disruptions_allowed == 0 and "found no controllers" in s.error
    assert s.as_status(1)["conditions"][0]["reason"] == "SyncFailed"


def test_pdb_validation() -> None:
    both = pdb_causes({"spec": {"minAvailable": 1, "maxUnavailable": 1}})
    assert both and "cannot be both set" in both[0][1]
    assert pdb_causes({"spec": {"maxUnavailable": "120%"}})[0][0] == "spec.maxUnavailable"
    assert pdb_causes({"spec": {"minAvailable": "x"}})[0][0] == "spec.minAvailable"
    assert "Unsupported value" in pdb_causes(
        {"spec": {"unhealthyPodEvictionPolicy": "Never"}})[0][1]
    assert pdb_causes({"spec": {"minAvailable": "50%"}}) == []


# --------------------------------------------------------------------------- decision


def test_budget_exhausted_is_429_naming_the_pdb() -> None:
    pdb = _pdb({"maxUnavailable": 0},
               {"disruptionsAllowed": 0, "currentHealthy": 2, "desiredHealthy": 2})
    out = decide_eviction(_pod("a"), [pdb])
    assert not out.delete and out.code == 429 and out.message == EVICTION_REFUSED
    assert out.causes == ({"reason": "DisruptionBudget",
                           "message": "The disruption budget web needs 2 healthy pods and has "
                                      "2 currently"},)


def test_allowed_eviction_spends_the_budget() -> None:
    pdb = _pdb({"minAvailable": 1},
               {"disruptionsAllowed": 1, "currentHealthy": 2, "desiredHealthy": 1})
    out = decide_eviction(_pod("a"), [pdb])
    assert out.delete and out.spend == "web"


def test_two_pdbs_is_500() -> None:
    out = decide_eviction(_pod("a"), [_pdb({"minAvailable": 1}), _pdb({"minAvailable": 1},
                                                                      name="other")])
    assert (out.delete, out.code, out.message) == (False, 500, MULTIPLE_PDBS)


def test_pending_pods_ignore_budgets() -> None:
    pdb = _pdb({"maxUnavailable": 0}, {"disruptionsAllowed": 0})
    assert decide_eviction(_pod("a", phase="Pending"), [pdb]).delete


@pytest.mark.parametrize(
    ("policy", "healthy", "desired", "evicted"),
    [
        # unhealthy pod, budget currently met: both policies evict without spending
        (None, 2, 2, True),
        ("IfHealthyBudget", 2, 2, True),
        ("AlwaysAllow", 2, 2, True),
        # unhealthy pod, budget not met: only AlwaysAllow evicts
        (None, 1, 2, False),
        ("IfHealthyBudget", 1, 2, False),
        ("AlwaysAllow", 1, 2, True),
    ],
)
def test_unhealthy_pod_eviction_policy(
    policy: str | None, healthy: int, desired: int, evicted: bool
) -> None:
    spec: dict[str, Any] = {"maxUnavailable": 0}
    if policy:
        spec["unhealthyPodEvictionPolicy"] = policy
    pdb = _pdb(spec, {"disruptionsAllowed": 0, "currentHealthy": healthy,
                      "desiredHealthy": desired})
    out = decide_eviction(_pod("sick", ready=False), [pdb])
    assert out.delete is evicted
    assert out.spend is None
    if not evicted:
        assert out.code == 429


def test_stale_pdb_status_is_429_still_processing() -> None:
    pdb = _pdb({"minAvailable": 1}, {"disruptionsAllowed": 5})
    pdb["metadata"]["generation"] = 2
    out = decide_eviction(_pod("a"), [pdb])
    assert out.code == 429 and "still being processed" in out.causes[0]["message"]
    assert out.retry_after == 10


# --------------------------------------------------------------------------- the subresource


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def api() -> KubeApi:
    store = Store()
    api = KubeApi(store, Controllers(store, workload_delay=1.0), clock=_Clock())
    for name in ("n1", "n2", "n3"):
        _call(api, "POST", "/api/v1/nodes", {"metadata": {"name": name}})
    return api


def _at(api: KubeApi, t: float) -> None:
    """Move the clock; the next request runs the controllers at that time."""
    api.clock.t = t  # type: ignore[attr-defined]
    api.handle("GET", "/healthz", {}, b"")


def _call(api: KubeApi, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else b""
    kind = "application/merge-patch+json" if method == "PATCH" else "application/json"
    resp = api.handle(method, path, {"content-type": kind}, data)
    return resp.code, json.loads(resp.body)


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
    }


def _pods(api: KubeApi, app: str) -> list[dict[str, Any]]:
    _, listed = _call(api, "GET", f"/api/v1/namespaces/default/pods?labelSelector=app%3D{app}")
    return list(listed["items"])


def _evict(api: KubeApi, pod: str) -> tuple[int, Any]:
    return _call(api, "POST", f"/api/v1/namespaces/default/pods/{pod}/eviction",
                 {"apiVersion": "policy/v1", "kind": "Eviction",
                  "metadata": {"name": pod, "namespace": "default"}})


def test_deployment_pods_are_spread_and_owned_by_a_replicaset(api: KubeApi) -> None:
    code, _ = _call(api, "POST", "/apis/apps/v1/namespaces/default/deployments",
                    _deployment("web", 3))
    assert code == 201
    _at(api, 0.0)  # the controllers see the new objects: pods created and bound
    _at(api, 1.0)  # workload_delay later: Running and Ready
    pods = _pods(api, "web")
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["n1", "n2", "n3"]
    owner = pods[0]["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "ReplicaSet" and owner["controller"] is True
    _, rs = _call(api, "GET", f"/apis/apps/v1/namespaces/default/replicasets/{owner['name']}")
    assert rs["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    assert all(p["status"]["phase"] == "Running" for p in pods)
    _, dep = _call(api, "GET", "/apis/apps/v1/namespaces/default/deployments/web")
    assert dep["status"]["readyReplicas"] == 3


def test_eviction_honours_the_budget_and_the_replacement_avoids_the_cordoned_node(
    api: KubeApi,
) -> None:
    _call(api, "POST", "/apis/apps/v1/namespaces/default/deployments", _deployment("web", 3))
    code, _ = _call(api, "POST", "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
                    {"metadata": {"name": "web"},
                     "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}})
    assert code == 201
    _at(api, 0.0)  # the controllers see the new objects: pods created and bound
    _at(api, 1.0)  # workload_delay later: Running and Ready
    _, pdb = _call(api, "GET", "/apis/policy/v1/namespaces/default/poddisruptionbudgets/web")
    assert {k: pdb["status"][k] for k in ("currentHealthy", "desiredHealthy", "expectedPods",
                                          "disruptionsAllowed")} == {
        "currentHealthy": 3, "desiredHealthy": 2, "expectedPods": 3, "disruptionsAllowed": 1}
    assert pdb["status"]["conditions"][0]["reason"] == "SufficientPods"

    code, node = _call(api, "PATCH", "/api/v1/nodes/n1", {"spec": {"unschedulable": True}})
    assert code == 200
    _, node = _call(api, "GET", "/api/v1/nodes/n1")
    assert {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"} in node["spec"][
        "taints"]
    on_n1 = next(p["metadata"]["name"] for p in _pods(api, "web") if p["spec"]["nodeName"] == "n1")
    code, status = _evict(api, on_n1)
    assert (code, status["status"]) == (201, "Success")
    # the replacement is scheduled at once, not on the cordoned node, Ready a second later
    pods = _pods(api, "web")
    assert len(pods) == 3 and "n1" not in {p["spec"]["nodeName"] for p in pods}
    other = next(p["metadata"]["name"] for p in pods if p["status"]["phase"] == "Running")
    code, status = _evict(api, other)
    assert code == 429 and status["reason"] == "TooManyRequests"
    assert status["message"] == EVICTION_REFUSED
    assert status["details"]["causes"] == [
        {"reason": "DisruptionBudget",
         "message": "The disruption budget web needs 2 healthy pods and has 2 currently"}]
    _at(api, 2.0)
    code, _ = _evict(api, other)
    assert code == 201


def test_two_budgets_answer_500_and_missing_pod_404(api: KubeApi) -> None:
    _call(api, "POST", "/apis/apps/v1/namespaces/default/deployments", _deployment("web", 2))
    for name in ("a", "b"):
        _call(api, "POST", "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
              {"metadata": {"name": name},
               "spec": {"minAvailable": 0, "selector": {"matchLabels": {"app": "web"}}}})
    _at(api, 0.0)  # the controllers see the new objects: pods created and bound
    _at(api, 1.0)  # workload_delay later: Running and Ready
    pod = _pods(api, "web")[0]["metadata"]["name"]
    code, status = _evict(api, pod)
    assert code == 500 and status["message"] == MULTIPLE_PDBS and status["code"] == 500
    code, status = _evict(api, "nope")
    assert code == 404 and status["reason"] == "NotFound"


def test_unhealthy_pod_always_allow_vs_if_healthy_budget(api: KubeApi) -> None:
    _call(api, "POST", "/apis/apps/v1/namespaces/default/deployments", _deployment("web", 2))
    _call(api, "POST", "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
          {"metadata": {"name": "web"},
           "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "web"}}}})
    _at(api, 0.0)  # the controllers see the new objects: pods created and bound
    _at(api, 1.0)  # workload_delay later: Running and Ready
    sick = _pods(api, "web")[0]["metadata"]["name"]
    api.controllers.pods.set_pod_ready("default", sick, False)
    code, status = _evict(api, sick)  # IfHealthyBudget: 1 healthy < 2 desired
    assert code == 429, status
    _call(api, "PATCH", "/apis/policy/v1/namespaces/default/poddisruptionbudgets/web",
          {"spec": {"unhealthyPodEvictionPolicy": "AlwaysAllow"}})
    code, status = _evict(api, sick)
    assert code == 201, status


def test_eviction_route_and_discovery(api: KubeApi) -> None:
    _, v1 = _call(api, "GET", "/api/v1")
    ev = next(r for r in v1["resources"] if r["name"] == "pods/eviction")
    assert (ev["group"], ev["version"], ev["kind"]) == ("policy", "v1", "Eviction")
    _call(api, "POST", "/apis/apps/v1/namespaces/default/deployments", _deployment("web", 1))
    pod = _pods(api, "web")[0]["metadata"]["name"]
    code, status = _call(api, "POST", f"/api/v1/namespaces/default/pods/{pod}/eviction",
                         {"apiVersion": "policy/v1", "kind": "Eviction",
                          "metadata": {"name": "other"}})
    assert code == 400 and "does not match" in status["message"]
    code, _ = _call(api, "GET", f"/api/v1/namespaces/default/pods/{pod}/eviction")
    assert code == 405
