"""Watches of the Kubernetes API emulator (sans-IO): the events a ``watch=1`` list request
streams, from the store's change history (:meth:`cloudctl.emulate.kube_store.Store.changes_since`).

As the API server (its watch cache) serves them:

- ``resourceVersion`` unset or ``"0"``: synthetic ``ADDED`` events for every matching object,
  then the changes; ``resourceVersion=N``: the changes after N; N older than the history: one
  ``ERROR`` event carrying a ``410 Expired`` Status ("too old resource version: N (M)"), after
  which the stream ends (clients relist). N newer than the store: ``504 Timeout``
  ("Too large resource version") before the stream starts.
- ``sendInitialEvents=true`` (the watch-list of client-go's reflector) requires
  ``resourceVersionMatch=NotOlderThan`` and ``allowWatchBookmarks=true`` (else 422 Invalid, the
  server's messages); the initial ``ADDED`` events end with a ``BOOKMARK`` annotated
  ``k8s.io/initial-events-end: "true"``.
- label and field selectors filter events as the server does: an object that stops matching
  is sent as ``DELETED``, one that starts matching as ``ADDED``.
- ``allowWatchBookmarks=true``: a ``BOOKMARK`` (the kind's apiVersion and kind, only
  ``metadata.resourceVersion``) every ``BOOKMARK_INTERVAL`` seconds and before the stream ends.
- ``timeoutSeconds``: the stream ends then (default: ``DEFAULT_TIMEOUT``).

Lists (``check_list_version``, ``paginate``): ``resourceVersion``/``resourceVersionMatch`` are
checked as the server checks them (504 for a version the store has not reached; ``Exact`` only at
the current version, else 410: no past states are kept), and ``limit``/``continue`` page a list
with an opaque token and ``remainingItemCount``.

``Watch`` is driven by the HTTP layer (``kube_api``) under its lock: ``poll(now)`` returns the
events due, ``wait_time(now)`` how long nothing can happen unless the store changes.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from .kube_store import ApiError, Change, Store, StoredObject
from .kube_types import ResourceType

__all__ = [
    "BOOKMARK_INTERVAL",
    "DEFAULT_TIMEOUT",
    "Watch",
    "check_list_version",
    "paginate",
    "parse_watch",
]

BOOKMARK_INTERVAL = 60.0
DEFAULT_TIMEOUT = 1800.0
INITIAL_EVENTS_END = "k8s.io/initial-events-end"

Predicate = Callable[[Mapping[str, Any]], bool]
Render = Callable[[dict[str, Any], bool], Any]
"""(object, first event) -> what an event carries (the object, or a Table row of it)."""


def _invalid_list_options(field: str, value: str, message: str) -> ApiError:
    return ApiError(
        422,
        "Invalid",
        f'ListOptions.meta.k8s.io "" is invalid: {field}: Invalid value: {value}: {message}',
        {"kind": "ListOptions", "group": "meta.k8s.io",
         "causes": [{"reason": "FieldValueInvalid", "message": f"Invalid value: {value}: "
                     f"{message}", "field": field}]},
    )


def expired(requested: int, oldest: int) -> ApiError:
    return ApiError(410, "Expired", f"too old resource version: {requested} ({oldest})")


def too_large(requested: int, current: int) -> ApiError:
    return ApiError(
        504,
        "Timeout",
        f"Timeout: Too large resource version: {requested}, current: {current}",
        {"causes": [{"reason": "ResourceVersionTooLarge",
                     "message": "Too large resource version"}], "retryAfterSeconds": 1},
    )


def parse_resource_version(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ApiError(400, "BadRequest", f"invalid resource version: {text}")
    return value


def parse_watch(query: Mapping[str, str]) -> dict[str, Any]:
    """The watch options of a request's query, checked as the API server checks them."""
    rv = query.get("resourceVersion", "")
    match = query.get("resourceVersionMatch", "")
    bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
    send_initial_text = query.get("sendInitialEvents")
    send_initial = send_initial_text in ("true", "1")
    if send_initial_text is not None:
        if match != "NotOlderThan":
            raise _invalid_list_options(
                "resourceVersionMatch", '""' if not match else f'"{match}"',
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan")
        if send_initial and not bookmarks:
            raise _invalid_list_options(
                "allowWatchBookmarks", "false",
                "allowWatchBookmarks must be set to true when sendInitialEvents is true")
    elif match:
        raise _invalid_list_options(
            "resourceVersionMatch", f'"{match}"',
            "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided")
    timeout = DEFAULT_TIMEOUT
    if query.get("timeoutSeconds"):
        try:
            timeout = float(int(query["timeoutSeconds"]))
        except ValueError as exc:
            raise ApiError(400, "BadRequest",
                           f"invalid timeoutSeconds: {query['timeoutSeconds']}") from exc
    return {
        "resource_version": rv,
        "send_initial": send_initial if send_initial_text is not None else None,
        "bookmarks": bookmarks,
        "timeout": timeout,
    }


class Watch:
    """One watch stream over objects of ``rt`` (in ``namespace`` if set) matching
    ``predicate``; events are dicts ``{"type": ..., "object": ...}`` ready to encode."""

    def __init__(
        self,
        store: Store,
        rt: ResourceType,
        namespace: str | None,
        predicate: Predicate,
        *,
        resource_version: str = "",
        send_initial: bool | None = None,
        bookmarks: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        now: float = 0.0,
        render: Render | None = None,
        bookmark_interval: float = BOOKMARK_INTERVAL,
    ) -> None:
        self.store = store
        self.rt = rt
        self.namespace = namespace if rt.namespaced else None
        self.predicate = predicate
        self.bookmarks = bookmarks
        self.deadline = now + max(0.0, timeout)
        self.bookmark_interval = bookmark_interval
        self._next_bookmark = now + bookmark_interval
        self._render = render or (lambda obj, _first: obj)
        self._first = True
        self.done = False
        self._pending: list[dict[str, Any]] = []
        requested = parse_resource_version(resource_version) if resource_version else None
        initial = send_initial if send_initial is not None else requested in (None, 0)
        if requested is not None and requested > store.revision:
            raise too_large(requested, store.revision)
        if initial:
            self.cursor = store.revision
            for stored in self._current():
                self._pending.append(self._event("ADDED", stored))
            if send_initial:
                self._pending.append(self._bookmark(initial_end=True))
        elif requested is None:  # sendInitialEvents=false without a version: from now on
            self.cursor = store.revision
        else:
            if requested < store.compacted:
                self._pending.append(self._error(expired(requested, store.compacted)))
                self.done = True
            self.cursor = requested

    # ------------------------------------------------------------------ driving

    def poll(self, now: float) -> list[dict[str, Any]]:
        """The events due now (store changes since the last poll, a bookmark); afterwards
        ``done`` tells whether the stream ends."""
        out, self._pending = self._pending, []
        if self.done:
            return out
        if self.store.compacted > self.cursor:  # fell behind the history: relist
            out.append(self._error(expired(self.cursor, self.store.compacted)))
            self.done = True
            return out
        for change in self.store.changes_since(self.cursor):
            event = self._from_change(change)
            if event is not None:
                out.append(event)
        self.cursor = self.store.revision
        if now >= self.deadline:
            if self.bookmarks:
                out.append(self._bookmark())
            self.done = True
        elif self.bookmarks and now >= self._next_bookmark:
            out.append(self._bookmark())
            self._next_bookmark = now + self.bookmark_interval
        return out

    def wait_time(self, now: float) -> float:
        """Seconds until ``poll`` has something to send if the store does not change."""
        if self.done or self._pending:
            return 0.0
        due = self.deadline
        if self.bookmarks:
            due = min(due, self._next_bookmark)
        return max(0.0, due - now) if math.isfinite(due) else math.inf

    def stop(self) -> list[dict[str, Any]]:
        """The emulator stops: the last events (a bookmark if asked for); the stream ends."""
        self.done = True
        return [self._bookmark()] if self.bookmarks else []

    # ------------------------------------------------------------------ events

    def _in_scope(self, key: tuple[str, str]) -> bool:
        return self.namespace is None or key[0] == self.namespace

    def _matches(self, stored: StoredObject | None) -> bool:
        return stored is not None and bool(self.predicate(stored.obj))

    def _current(self) -> list[StoredObject]:
        listed = []
        for stored in self.store.iter_stored(self.rt):
            meta = stored.obj["metadata"]
            key = (meta.get("namespace") or "", meta["name"])
            if self._in_scope(key) and self._matches(stored):
                listed.append((key, stored))
        return [stored for _key, stored in sorted(listed, key=lambda ks: ks[0])]

    def _from_change(self, change: Change) -> dict[str, Any] | None:
        if change.group_resource != (self.rt.group, self.rt.plural):
            return None
        if not self._in_scope(change.key):
            return None
        now_matches = change.kind != "DELETED" and self._matches(change.stored)
        was_matching = self._matches(change.previous)
        if change.kind == "DELETED":
            return self._event("DELETED", change.stored) if was_matching else None
        if now_matches and was_matching:
            return self._event("MODIFIED", change.stored)
        if now_matches:
            return self._event("ADDED", change.stored)
        if was_matching:  # no longer selected: gone from this watch's view
            return self._event("DELETED", change.stored)
        return None

    def _event(self, kind: str, stored: StoredObject) -> dict[str, Any]:
        obj = self._render(self.store.render(self.rt, stored), self._first)
        self._first = False
        return {"type": kind, "object": obj}

    def _bookmark(self, *, initial_end: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {"resourceVersion": str(max(self.cursor, 0)),
                                "creationTimestamp": None}
        if initial_end:
            meta["annotations"] = {INITIAL_EVENTS_END: "true"}
        return {"type": "BOOKMARK",
                "object": {"kind": self.rt.kind, "apiVersion": self.rt.api_version,
                           "metadata": meta}}

    @staticmethod
    def _error(err: ApiError) -> dict[str, Any]:
        return {"type": "ERROR", "object": err.status()}


# --------------------------------------------------------------------------- lists

_CONTINUE_TOO_OLD = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter."
)


def _item_key(item: Mapping[str, Any]) -> str:
    meta = item.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name')}"


def encode_continue(rv: str, start: str) -> str:
    doc = json.dumps({"v": "meta.k8s.io/v1", "rv": int(rv), "start": start},
                     separators=(",", ":"))
    return base64.urlsafe_b64encode(doc.encode()).decode()


def decode_continue(token: str) -> tuple[int, str]:
    """(resourceVersion of the first page, key of its last item); 400 when not a token."""
    try:
        doc = json.loads(base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4)))
        if doc.get("v") != "meta.k8s.io/v1":
            raise ValueError("unknown version")
        return int(doc["rv"]), str(doc["start"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ApiError(400, "BadRequest", f"continue key is not valid: {exc}") from exc


def check_list_version(store: Store, query: Mapping[str, str]) -> None:
    """``resourceVersion``/``resourceVersionMatch`` of a list, as the API server checks them.
    The store keeps no past states: ``Exact`` can be served only at the current version."""
    rv_text = query.get("resourceVersion", "")
    match = query.get("resourceVersionMatch", "")
    if query.get("continue") and rv_text not in ("", "0"):
        raise ApiError(400, "BadRequest",
                       "specifying resource version is not allowed when using continue")
    if match and not rv_text:
        raise _invalid_list_options("resourceVersionMatch", f'"{match}"',
                                    "resourceVersionMatch is forbidden unless resourceVersion "
                                    "is provided")
    if match not in ("", "Exact", "NotOlderThan"):
        raise _invalid_list_options("resourceVersionMatch", f'"{match}"',
                                    'supported values: "Exact", "NotOlderThan"')
    if not rv_text:
        return
    requested = parse_resource_version(rv_text)
    if requested > store.revision:
        raise too_large(requested, store.revision)
    if match == "Exact" and requested != store.revision:
        raise expired(requested, store.compacted)


def paginate(store: Store, listed: dict[str, Any], query: Mapping[str, str],
             selected: bool) -> dict[str, Any]:
    """One page of ``listed`` (every item, in key order) for ``limit`` and ``continue``: the
    opaque token carries the first page's resourceVersion and the last key served. Later pages
    are read from the current state (the store keeps no snapshots); a token older than the
    change history answers 410 Expired. ``remainingItemCount`` is set unless a selector
    filtered the list (as the API server)."""
    items = listed["items"]
    token = query.get("continue")
    if token:
        rv, start = decode_continue(token)
        if rv < store.compacted:
            raise ApiError(410, "Expired", _CONTINUE_TOO_OLD)
        items = [i for i in items if _item_key(i) > start]
        listed["metadata"]["resourceVersion"] = str(rv)
    try:
        limit = int(query.get("limit") or 0)
    except ValueError:
        limit = 0
    if limit > 0 and len(items) > limit:
        page = items[:limit]
        listed["metadata"]["continue"] = encode_continue(
            listed["metadata"]["resourceVersion"], _item_key(page[-1]))
        if not selected:
            listed["metadata"]["remainingItemCount"] = len(items) - limit
        items = page
    listed["items"] = items
    return listed
