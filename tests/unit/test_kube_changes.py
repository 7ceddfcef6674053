"""cloudctl.kube.changes: a wait sleeps on a watch from the resourceVersion of its last look,
and a failed watch (410, an error event, a dropped connection) never hangs it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from cloudctl.errors import Timeout
from cloudctl.kube import Kube, ObjectRef, wait_helmreleases
from cloudctl.kube.changes import MAX_WATCH, Changes
from cloudctl.kube.client import Resource
from cloudctl.kube.errors import KubeUnreachable


class ScriptedKube(Kube):
    """A Kube whose list and watch answers are scripted (no server)."""

    def __init__(self, watches: list[Any]) -> None:
        self._discovery = {}
        self.timeout = 30.0
        self.watches = watches
        self.watched: list[dict[str, Any]] = []
        self.lists = 0

    def resource(self, api_version: str, kind: str) -> Resource | None:
        return Resource(api_version, kind, kind.lower() + "s", True)

    def list_versioned(self, api_version: str, kind: str, **kw: Any) -> Any:
        self.lists += 1
        return [], str(10 + self.lists)

    def watch(self, api_version: str, kind: str, **kw: Any) -> Iterator[dict[str, Any]]:
        self.watched.append({"kind": kind, **kw})
        answer = self.watches.pop(0) if self.watches else []
        if isinstance(answer, Exception):
            raise answer
        yield from answer


def _changes(kube: ScriptedKube) -> tuple[Changes, list[float]]:
    slept: list[float] = []
    return Changes(kube, interval=0.5, sleep=slept.append), slept


def test_a_change_ends_the_wait_at_once() -> None:
    kube = ScriptedKube([[{"type": "BOOKMARK", "object": {}},
                          {"type": "MODIFIED", "object": {"metadata": {"name": "a"}}}]])
    changes, slept = _changes(kube)
    changes.list("helm.toolkit.fluxcd.io/v2", "HelmRelease", namespace="flux-system")
    changes.wait(300)
    assert slept == [] and changes.failures == []
    (watched,) = kube.watched
    assert watched["resource_version"] == "11" and watched["namespace"] == "flux-system"
    assert watched["timeout"] == MAX_WATCH


def test_expired_relists_at_once_other_failures_poll() -> None:
    gone = {"type": "ERROR", "object": {"code": 410, "reason": "Expired",
                                        "message": "too old resource version: 1 (5)"}}
    broken = {"type": "ERROR", "object": {"code": 500, "reason": "InternalError",
                                          "message": "etcd is down"}}
    kube = ScriptedKube([[gone], [broken], KubeUnreachable("watch HelmRelease: reset")])
    changes, slept = _changes(kube)
    changes.look(ObjectRef("apps/v1", "Deployment", "web", "default"))
    changes.wait(10)
    assert slept == [] and changes.failures == []  # 410: look again, no sleep, no failure
    changes.look(ObjectRef("apps/v1", "Deployment", "web", "default"))
    changes.wait(10)
    changes.wait(0.2)
    assert slept == [0.5, 0.2]
    assert "500 InternalError: etcd is down" in changes.failures[0]
    assert "reset" in changes.note() and "polled every 0.5s" in changes.note()


def test_clients_other_than_kube_are_polled() -> None:
    class Listing:
        def list(self, *args: Any, **kw: Any) -> list[dict[str, Any]]:
            return []

    slept: list[float] = []
    changes = Changes(Listing(), interval=2.0, sleep=slept.append)
    assert changes.list("v1", "Pod") == []
    changes.wait(1.0)
    assert slept == [1.0] and not changes.watching


def test_a_wait_whose_watch_keeps_failing_says_so_when_time_runs_out() -> None:
    kube = ScriptedKube([KubeUnreachable("connection reset")] * 10)
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with pytest.raises(Timeout) as exc:
        wait_helmreleases(kube, names=["cilium"], timeout=2, interval=1.0,
                          clock=lambda: now[0], sleep=sleep)
    text = str(exc.value)
    assert "flux-system/cilium (not found)" in text
    assert "watching failed, the wait polled every 1s instead" in text
    assert "connection reset" in text and exc.value.exit_code == 7
