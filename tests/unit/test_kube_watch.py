"""Watches of the Kubernetes API emulator without sockets: the events a watch request yields
from the store's change history, resourceVersion semantics, selectors, bookmarks, 410 Expired."""

from __future__ import annotations

from typing import Any

import pytest

from cloudctl.emulate.kube_api import KubeApi
from cloudctl.emulate.kube_reconcile import Controllers
from cloudctl.emulate.kube_store import ApiError, Store
from cloudctl.emulate.kube_types import ResourceType, label_selector
from cloudctl.emulate.kube_watch import (
    INITIAL_EVENTS_END,
    Watch,
    check_list_version,
    paginate,
    parse_watch,
)


def _cm_type(store: Store) -> ResourceType:
    rt = store.type_of("v1", "ConfigMap")
    assert rt is not None
    return rt


def _cm(store: Store, name: str, ns: str = "default", **labels: str) -> None:
    store.create(_cm_type(store), ns, {"metadata": {"name": name, "labels": labels}},
                 manager="t")


def _label(store: Store, name: str, **labels: str) -> None:
    store.patch(_cm_type(store), "default", name, "merge", {"metadata": {"labels": labels}},
                manager="t")


def _seen(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e["object"]["metadata"].get("name", "")) for e in events]


def test_initial_state_then_changes_in_order() -> None:
    store = Store()
    rt = _cm_type(store)
    _cm(store, "b")
    _cm(store, "a")
    _cm(store, "other", ns="kube-system")
    watch = Watch(store, rt, "default", lambda o: True)
    assert _seen(watch.poll(0)) == [("ADDED", "a"), ("ADDED", "b")]
    assert watch.poll(0) == []
    _label(store, "a", x="1")
    store.delete(rt, "default", "b")
    _cm(store, "c")
    events = watch.poll(1)
    assert _seen(events) == [("MODIFIED", "a"), ("DELETED", "b"), ("ADDED", "c")]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and rvs[-1] == store.revision
    assert events[0]["object"]["apiVersion"] == "v1" and events[0]["object"]["kind"] == "ConfigMap"


def test_resource_version_starts_after_it() -> None:
    store = Store()
    rt = _cm_type(store)
    _cm(store, "a")
    start = store.revision
    _cm(store, "b")
    watch = Watch(store, rt, None, lambda o: True, resource_version=str(start))
    assert _seen(watch.poll(0)) == [("ADDED", "b")]
    # "0": any state, here the current one, then the changes
    watch0 = Watch(store, rt, None, lambda o: True, resource_version="0")
    assert sorted(_seen(watch0.poll(0))) == [("ADDED", "a"), ("ADDED", "b")]
    with pytest.raises(ApiError) as exc:
        Watch(store, rt, None, lambda o: True, resource_version=str(store.revision + 5))
    assert (exc.value.code, exc.value.reason) == (504, "Timeout")
    assert "Too large resource version" in exc.value.message
    with pytest.raises(ApiError) as bad:
        Watch(store, rt, None, lambda o: True, resource_version="abc")
    assert bad.value.code == 400


def test_selector_transitions_are_added_and_deleted() -> None:
    store = Store()
    rt = _cm_type(store)
    _cm(store, "a")
    watch = Watch(store, rt, "default", label_selector("app=web"),
                  resource_version=store.resource_version)
    _label(store, "a", app="web")
    _label(store, "a", tier="1")
    _label(store, "a", app="db")
    _label(store, "a", tier="2")
    assert _seen(watch.poll(0)) == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]


def test_a_version_older_than_the_history_is_gone() -> None:
    store = Store(history=3)
    rt = _cm_type(store)
    start = store.revision
    for name in "abcd":
        _cm(store, name)
    watch = Watch(store, rt, None, lambda o: True, resource_version=str(start))
    (event,) = watch.poll(0)
    assert watch.done and event["type"] == "ERROR"
    status = event["object"]
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
    assert status["message"] == f"too old resource version: {start} ({store.compacted})"
    # a watch that falls behind while open ends the same way
    recent = Watch(store, rt, None, lambda o: True, resource_version=store.resource_version)
    for name in "efgh":
        _cm(store, name)
    assert [e["type"] for e in recent.poll(0)] == ["ERROR"] and recent.done


def test_bookmarks_and_timeout() -> None:
    store = Store()
    rt = _cm_type(store)
    watch = Watch(store, rt, None, lambda o: True, resource_version=store.resource_version,
                  bookmarks=True, timeout=10, now=0, bookmark_interval=4)
    assert watch.poll(1) == [] and watch.wait_time(1) == 3
    (mark,) = watch.poll(4)
    assert mark["type"] == "BOOKMARK"
    assert mark["object"] == {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {
        "resourceVersion": store.resource_version, "creationTimestamp": None}}
    _cm(store, "a")
    assert _seen(watch.poll(5)) == [("ADDED", "a")]
    assert not watch.done
    assert [e["type"] for e in watch.poll(10)] == ["BOOKMARK"] and watch.done
    plain = Watch(store, rt, None, lambda o: True, resource_version="1", timeout=2, now=0)
    plain.poll(0)
    assert plain.poll(2) == [] and plain.done


def test_send_initial_events_as_the_watch_list() -> None:
    store = Store()
    rt = _cm_type(store)
    _cm(store, "a")
    opts = parse_watch({"sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan",
                        "allowWatchBookmarks": "true", "timeoutSeconds": "30"})
    watch = Watch(store, rt, None, lambda o: True, **opts)
    events = watch.poll(0)
    assert _seen(events)[0] == ("ADDED", "a")
    end = events[-1]
    assert end["type"] == "BOOKMARK"
    assert end["object"]["metadata"]["annotations"] == {INITIAL_EVENTS_END: "true"}
    assert end["object"]["metadata"]["resourceVersion"] == store.resource_version
    later = Watch(store, rt, None, lambda o: True, **parse_watch({
        "sendInitialEvents": "false", "resourceVersionMatch": "NotOlderThan"}))
    _cm(store, "b")
    assert _seen(later.poll(0)) == [("ADDED", "b")]  # no initial state: changes from now on
    for query, field in (
        ({"sendInitialEvents": "true"}, "resourceVersionMatch"),
        ({"sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan"},
         "allowWatchBookmarks"),
        ({"resourceVersionMatch": "Exact"}, "resourceVersionMatch"),
    ):
        with pytest.raises(ApiError) as exc:
            parse_watch(query)
        assert exc.value.code == 422 and exc.value.details is not None
        assert exc.value.details["causes"][0]["field"] == field


def test_the_api_answers_a_watch_with_a_stream() -> None:
    store = Store()
    now = [0.0]
    api = KubeApi(store, Controllers(store), clock=lambda: now[0])
    resp = api.handle("GET", "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=5"
                      "&labelSelector=app%3Dweb", {}, b"")
    assert resp.code == 200 and resp.watch is not None
    _cm(store, "a", app="web")
    _cm(store, "b", app="db")
    assert _seen(resp.watch.poll(now[0])) == [("ADDED", "a")]
    now[0] = 5
    assert resp.watch.poll(now[0]) == [] and resp.watch.done
    table = api.handle("GET", "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion="
                       f"{store.resource_version}",
                       {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}, b"")
    assert table.watch is not None
    _cm(store, "c")
    _cm(store, "d")
    first, second = table.watch.poll(0)
    assert first["object"]["kind"] == "Table" and first["object"]["columnDefinitions"]
    assert first["object"]["rows"][0]["cells"][0] == "c"
    assert second["object"]["columnDefinitions"] == []


def test_list_resource_version_checks() -> None:
    store = Store()
    _cm(store, "a")
    current = store.revision
    check_list_version(store, {})
    check_list_version(store, {"resourceVersion": "0"})
    check_list_version(store, {"resourceVersion": str(current),
                               "resourceVersionMatch": "Exact"})
    for query, code, reason in (
        ({"resourceVersion": str(current + 3)}, 504, "Timeout"),
        ({"resourceVersion": "1", "resourceVersionMatch": "Exact"}, 410, "Expired"),
        ({"resourceVersionMatch": "NotOlderThan"}, 422, "Invalid"),
        ({"resourceVersion": "1", "resourceVersionMatch": "Newest"}, 422, "Invalid"),
        ({"resourceVersion": "5", "continue": "x"}, 400, "BadRequest"),
    ):
        with pytest.raises(ApiError) as exc:
            check_list_version(store, query)
        assert (exc.value.code, exc.value.reason) == (code, reason), query


def _page(store: Store, query: dict[str, str], selected: bool = False) -> dict[str, Any]:
    return paginate(store, store.list(_cm_type(store), "default"), query, selected)


def test_pages_with_limit_and_continue() -> None:
    store = Store(history=5)
    for name in "abcde":
        _cm(store, name)
    first = _page(store, {"limit": "2"})
    assert [i["metadata"]["name"] for i in first["items"]] == ["a", "b"]
    assert first["metadata"]["remainingItemCount"] == 3
    rv = first["metadata"]["resourceVersion"]
    _cm(store, "c2")  # created between the pages: read from the current state
    second = _page(store, {"limit": "2", "continue": first["metadata"]["continue"]})
    assert [i["metadata"]["name"] for i in second["items"]] == ["c", "c2"]
    assert second["metadata"]["resourceVersion"] == rv
    last = _page(store, {"limit": "2", "continue": second["metadata"]["continue"]},
                 selected=True)
    assert [i["metadata"]["name"] for i in last["items"]] == ["d", "e"]
    assert "continue" not in last["metadata"] and "remainingItemCount" not in last["metadata"]
    assert "remainingItemCount" not in _page(store, {"limit": "1"}, selected=True)["metadata"]
    with pytest.raises(ApiError) as bad:
        _page(store, {"continue": "not-a-token"})
    assert bad.value.code == 400
    for name in "vwxyz":  # the first page's version falls out of the history
        _cm(store, name)
    with pytest.raises(ApiError) as gone:
        _page(store, {"limit": "2", "continue": first["metadata"]["continue"]})
    assert (gone.value.code, gone.value.reason) == (410, "Expired")
