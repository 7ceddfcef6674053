"""Scheduling choices of the Kubernetes API emulator (pure functions of kube_pods)."""

from __future__ import annotations

from typing import Any

from cloudctl.emulate.kube_pods import (
    DAEMON_TOLERATIONS,
    fit_problems,
    pick_node,
    pod_from_template,
    tolerates,
    unschedulable_message,
)


def _node(name: str, *, cordoned: bool = False, taints: list[dict[str, str]] | None = None,
          labels: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"taints": taints or []}
    if cordoned:
        spec["unschedulable"] = True
    return {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                                                  **(labels or {})}}, "spec": spec}


def test_toleration_matching() -> None:
    taint = {"key": "dedicated", "value": "db", "effect": "NoSchedule"}
    assert tolerates([{"key": "dedicated", "operator": "Equal", "value": "db"}], taint)
    assert tolerates([{"key": "dedicated", "value": "db"}], taint)  # Equal is the default
    assert not tolerates([{"key": "dedicated", "value": "web"}], taint)
    assert tolerates([{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}], taint)
    assert not tolerates([{"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}],
                         taint)
    assert tolerates([{"operator": "Exists"}], taint)  # empty key + Exists: everything
    assert not tolerates([], taint)


def test_cordon_and_taints_filter_but_daemon_pods_tolerate_cordon() -> None:
    plain: dict[str, Any] = {"containers": [{"name": "c"}]}
    assert fit_problems(_node("a", cordoned=True), plain) == ["were unschedulable"]
    assert fit_problems(_node("a", cordoned=True),
                        {**plain, "tolerations": list(DAEMON_TOLERATIONS)}) == []
    tainted = _node("b", taints=[{"key": "dedicated", "value": "db", "effect": "NoSchedule"}])
    assert fit_problems(tainted, plain) == ["had untolerated taint {dedicated=db: }"]
    # PreferNoSchedule never filters; the lifecycle not-ready taint is deliberately not a filter
    soft = _node("c", taints=[{"key": "x", "effect": "PreferNoSchedule"},
                              {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}])
    assert fit_problems(soft, plain) == []
    assert fit_problems(_node("d"), {**plain, "nodeSelector": {"disk": "ssd"}}) == [
        "didn't match Pod's node affinity/selector"]


def test_spread_is_deterministic() -> None:
    assert pick_node(["n2", "n1", "n3"], {}, {}) == "n1"
    assert pick_node(["n1", "n2", "n3"], {"n1": 1}, {}) == "n2"
    assert pick_node(["n1", "n2"], {"n1": 1, "n2": 1}, {"n1": 5, "n2": 2}) == "n2"
    assert pick_node([], {}, {}) is None


def test_unschedulable_message_counts_reasons() -> None:
    msg = unschedulable_message({"a": ["were unschedulable"], "b": ["were unschedulable"],
                                 "c": ["had untolerated taint {x: }"]})
    assert msg.startswith("0/3 nodes are available: 1 node(s) had untolerated taint {x: }, "
                          "2 node(s) were unschedulable.")


def test_daemon_pod_is_pinned_by_node_affinity_and_owned() -> None:
    owner = {"apiVersion": "apps/v1", "kind": "DaemonSet",
             "metadata": {"name": "agent", "uid": "u1"}}
    pod = pod_from_template({"metadata": {"labels": {"app": "agent"}},
                             "spec": {"containers": [{"name": "c"}]}},
                            name="agent-x", namespace="kube-system", owner=owner,
                            tolerations=DAEMON_TOLERATIONS, node_name="w1")
    ref = pod["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["uid"], ref["controller"]) == ("DaemonSet", "u1", True)
    assert fit_problems(_node("w1", cordoned=True), pod["spec"]) == []
    assert fit_problems(_node("w2"), pod["spec"]) == ["didn't match Pod's node affinity/selector"]
