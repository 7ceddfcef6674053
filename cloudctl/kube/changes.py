"""Sleeping until what a wait looks at may have changed: a watch, not a poll.

A wait looks (lists or gets), judges, and when it must wait longer calls ``Changes.wait``:
that watches the kind it looked at from the ``resourceVersion`` of the look (so no change
between the look and the watch is missed) and returns at the first change, when the time given
runs out, or when the server ends the stream. The caller then looks again (relist + rewatch).

A watch that fails — ``410 Expired`` (the version is too old: the next look starts a fresh
one at once), any other error event, an HTTP error, a dropped connection — never hangs: the
wait sleeps ``interval`` instead and looks again; the failure is kept in ``failures`` so that
a timeout can say the wait fell back to polling and why. Kinds that are not served and clients
other than :class:`cloudctl.kube.client.Kube` (test doubles) are polled every ``interval``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import CloudctlError
from .client import Kube
from .objects import ObjectRef

__all__ = ["MAX_WATCH", "Changes"]

MAX_WATCH = 60.0
"""Seconds one watch lasts at most before the wait looks again anyway."""


@dataclass
class Changes:
    kube: Any
    interval: float = 1.0
    sleep: Callable[[float], None] = time.sleep
    failures: list[str] = field(default_factory=list)
    _target: tuple[str, str, str | None, str] | None = None
    """(apiVersion, kind, namespace, resourceVersion) the next ``wait`` watches from."""

    @property
    def watching(self) -> bool:
        return isinstance(self.kube, Kube)

    def list(
        self, api_version: str, kind: str, *, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        """List ``kind`` and watch from this list on."""
        if not self.watching:
            self._target = None
            items: list[dict[str, Any]] = self.kube.list(api_version, kind, namespace=namespace)
            return items
        items, rv = self.kube.list_versioned(api_version, kind, namespace=namespace)
        self._target = (api_version, kind, namespace, rv) if rv else None
        return items

    def mark(self, api_version: str, kind: str, *, namespace: str | None = None) -> None:
        """The next ``wait`` watches ``kind`` (in ``namespace``, or everywhere) from now on
        (a one-item list for the current resourceVersion)."""
        self._target = None
        if not self.watching:
            return
        kube: Kube = self.kube
        try:
            if kube.resource(api_version, kind) is None:
                return
            _, rv = kube.list_versioned(api_version, kind, namespace=namespace, limit=1)
        except CloudctlError as exc:
            self._failed(str(exc))
            return
        if rv:
            self._target = (api_version, kind, namespace, rv)

    def look(self, ref: ObjectRef) -> None:
        """Before reading ``ref`` (and others): the next ``wait`` watches ``ref``'s kind in its
        namespace from now on (one small list for the current resourceVersion)."""
        self._target = None
        if not self.watching:
            return
        kube: Kube = self.kube
        try:
            if kube.resource(ref.api_version, ref.kind) is None:
                return  # not served (yet): polled
            _, rv = kube.list_versioned(ref.api_version, ref.kind, namespace=ref.namespace,
                                        field_selector=f"metadata.name={ref.name}")
        except CloudctlError as exc:
            self._failed(str(exc))
            return
        if rv:
            self._target = (ref.api_version, ref.kind, ref.namespace, rv)

    def wait(self, seconds: float) -> None:
        """Until what was looked at last changes, ``seconds`` pass or the watch fails (then
        ``interval``)."""
        if seconds <= 0:
            return
        target = self._target
        if target is None:
            self.sleep(min(self.interval, seconds))
            return
        api_version, kind, namespace, rv = target
        try:
            for event in self.kube.watch(api_version, kind, namespace=namespace,
                                         resource_version=rv,
                                         timeout=min(seconds, MAX_WATCH)):
                kind_of = event.get("type")
                if kind_of == "BOOKMARK":
                    continue
                if kind_of == "ERROR":
                    status = event.get("object") or {}
                    if status.get("code") == 410:  # too old: the next look starts afresh
                        return
                    self._failed(f"watch {kind}: {status.get('code')} {status.get('reason')}: "
                                 f"{status.get('message')}")
                    self.sleep(min(self.interval, seconds))
                    return
                return  # a change: look again
        except CloudctlError as exc:
            self._failed(str(exc))
            self.sleep(min(self.interval, seconds))

    def _failed(self, what: str) -> None:
        self.failures.append(what)
        del self.failures[:-5]

    def note(self) -> str:
        """For a timeout message: the last watch failure, if the wait had to poll."""
        if not self.failures:
            return ""
        return (f"\n(watching failed, the wait polled every {self.interval:g}s instead; last "
                f"failure: {self.failures[-1]})")
