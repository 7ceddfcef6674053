"""Pipeline events: one stream for people (text) and machines (JSON lines).

Every event passes through ``Redactor`` before any sink sees it, so secret material (keys,
tokens) that might slip into an error message never reaches stdout, logs or event files.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import IO, Protocol


@dataclass(frozen=True)
class Event:
    stage: str
    kind: str
    """stage-start, stage-done, stage-failed, stage-skipped, node, release, plan, info, warn;
    ansible-playbook, ansible-task, ansible-host, ansible-stats (``cloudctl.ansible.events``)"""
    message: str = ""
    node: str | None = None
    phase: str | None = None
    error: str | None = None
    ts: float = 0.0

    def with_time(self) -> Event:
        return self if self.ts else replace(self, ts=round(time.time(), 3))


class EventSink(Protocol):
    def emit(self, event: Event) -> None: ...


class Redactor:
    """Replaces every known secret string (and long fragments of them) with a marker."""

    MARK = "[REDACTED]"

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True)

    def __call__(self, text: str | None) -> str | None:
        if not text:
            return text
        for s in self._secrets:
            if s in text:
                text = text.replace(s, self.MARK)
        return text

    def event(self, e: Event) -> Event:
        return replace(e, message=self(e.message) or "", error=self(e.error))


class JsonLinesSink:
    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def emit(self, event: Event) -> None:
        self.stream.write(json.dumps(asdict(event), sort_keys=True) + "\n")
        self.stream.flush()


class TextSink:
    """Plain lines for people: ``[stage] node: message``."""

    def __init__(self, stream: IO[str] | None = None, *, verbose: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.verbose = verbose

    def emit(self, event: Event) -> None:
        if event.kind == "info" and not self.verbose:
            return
        who = f" {event.node}:" if event.node else ""
        mark = {
            "stage-start": "▶",
            "stage-done": "✔",
            "stage-failed": "✘",
            "stage-skipped": "·",
            "warn": "!",
        }.get(event.kind, " ")
        line = f"{mark} [{event.stage}]{who} {event.message}"
        if event.error:
            line += f" — {event.error}"
        self.stream.write(line.rstrip() + "\n")
        self.stream.flush()


class Events:
    """Fan-out to sinks, redacting first; also keeps every event for tests and summaries."""

    def __init__(self, sinks: Iterable[EventSink] = (), redactor: Redactor | None = None):
        self.sinks = list(sinks)
        self.redactor = redactor or Redactor()
        self.history: list[Event] = []
        self._bundle_secrets: list[str] = []
        self._run_secrets: list[str] = []

    def set_secrets(self, secrets: Iterable[str]) -> None:
        """The cluster's secrets (the bundle); replaces the ones set before."""
        self._bundle_secrets = list(secrets)
        self.redactor = Redactor([*self._bundle_secrets, *self._run_secrets])

    def add_secrets(self, secrets: Iterable[str]) -> None:
        """More secrets resolved during the run (SSH keys, passphrases), kept in addition to
        the bundle's."""
        self._run_secrets += list(secrets)
        self.redactor = Redactor([*self._bundle_secrets, *self._run_secrets])

    def emit(self, event: Event) -> None:
        e = self.redactor.event(event.with_time())
        self.history.append(e)
        for sink in self.sinks:
            sink.emit(e)

    def __call__(self, stage: str, kind: str, message: str = "", **kw: str | None) -> None:
        self.emit(Event(stage=stage, kind=kind, message=message, **kw))  # type: ignore[arg-type]
