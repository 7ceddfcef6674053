"""ansible-runner events as cloudctl events, and the failures among them. Pure (no pipeline:
the runner adds the stage and emits them).

ansible-runner calls back with one dict per Ansible callback (``event``: playbook_on_start,
playbook_on_play_start, playbook_on_task_start, runner_on_ok/failed/unreachable/skipped,
playbook_on_stats, ...; details under ``event_data``). ``translate`` turns the ones people
and programs care about into ``AnsibleEvent``s, which become pipeline events of these kinds:

* ``ansible-playbook``: a playbook or a play starts (message ``playbook NAME`` /
  ``play NAME (hosts: PATTERN)``);
* ``ansible-task``: a task starts (message ``task NAME``);
* ``ansible-host``: a task's result on one host (``node`` the host, ``phase`` one of ok,
  changed, failed, ignored (a failure the play ignores), unreachable, skipped; ``error`` the
  module's message for failed/unreachable);
* ``ansible-stats``: the recap, one event per host (``phase`` ok or failed);
* ``warn``: no host matched a play's pattern, or Ansible printed a warning.

Everything else (per-item results, runner_on_start, verbose output) is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
RESULT_PHASES = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
}


@dataclass(frozen=True)
class AnsibleEvent:
    """The fields of a pipeline ``Event`` but its stage."""

    kind: str
    message: str
    node: str | None = None
    phase: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Failure:
    """A task that failed (or could not reach its host) and stops the playbook."""

    task: str
    host: str
    message: str
    unreachable: bool = False

    def __str__(self) -> str:
        what = "could not reach" if self.unreachable else "failed on"
        return f"task {self.task!r} {what} host {self.host}: {self.message}"


def plain(text: str) -> str:
    """``text`` without terminal colour codes and surrounding blank space."""
    return _ANSI.sub("", text).strip()


def _tail(text: Any, limit: int = 400) -> str:
    s = plain(str(text or ""))
    return s if len(s) <= limit else "..." + s[-limit:]


def result_message(res: Mapping[str, Any]) -> str:
    """What a failed module said: ``msg``, plus the tail of stderr (or stdout) when the module
    ran a command or crashed, plus its return code; for fact gathering, what each failed
    module said."""
    parts = [_tail(res.get("msg")) or "failed"]
    for module, sub in (res.get("failed_modules") or {}).items():
        if isinstance(sub, Mapping):
            parts.append(f"{module}: {result_message(sub)}")
    out = (res.get("stderr") or res.get("stdout") or res.get("module_stderr")
           or res.get("module_stdout"))
    if out and _tail(out) not in parts[0]:
        parts.append(_tail(out))
    if isinstance(res.get("rc"), int) and res["rc"] != 0:
        parts.append(f"rc={res['rc']}")
    return "; ".join(parts)


def failure_of(raw: Mapping[str, Any]) -> Failure | None:
    """The failure ``raw`` reports, or None (ignored failures are not failures)."""
    kind = raw.get("event")
    data = raw.get("event_data") or {}
    if kind not in ("runner_on_failed", "runner_on_unreachable") or data.get("ignore_errors"):
        return None
    res = data.get("res") or {}
    return Failure(task=str(data.get("task") or "?"), host=str(data.get("host") or "?"),
                   message=result_message(res), unreachable=kind == "runner_on_unreachable")


def _phase(kind: str, data: Mapping[str, Any]) -> str:
    res = data.get("res") or {}
    if kind == "runner_on_ok" and res.get("changed"):
        return "changed"
    if kind == "runner_on_failed" and data.get("ignore_errors"):
        return "ignored"
    return RESULT_PHASES[kind]


def _stats(data: Mapping[str, Any]) -> list[AnsibleEvent]:
    keys = ("ok", "changed", "failures", "dark", "skipped", "rescued", "ignored")
    counts = {k: data.get(k) or {} for k in keys}
    hosts = sorted({h for c in counts.values() for h in c} | set(data.get("processed") or {}))
    events = []
    for host in hosts:
        n = {k: int(counts[k].get(host, 0)) for k in keys}
        bad = n["failures"] or n["dark"]
        events.append(AnsibleEvent(
            "ansible-stats",
            f"ok={n['ok']} changed={n['changed']} failed={n['failures']} "
            f"unreachable={n['dark']} skipped={n['skipped']}",
            node=host, phase="failed" if bad else "ok"))
    return events


def translate(raw: Mapping[str, Any]) -> list[AnsibleEvent]:
    """The cloudctl events for one ansible-runner event (often none)."""
    kind = str(raw.get("event") or "")
    data = raw.get("event_data") or {}
    if kind == "playbook_on_start":
        name = PurePath(str(data.get("playbook") or "?")).name
        return [AnsibleEvent("ansible-playbook", f"playbook {name}", phase="start")]
    if kind == "playbook_on_play_start":
        return [AnsibleEvent("ansible-playbook",
                      f"play {data.get('name') or '(unnamed)'} "
                      f"(hosts: {data.get('pattern') or '?'})", phase="play")]
    if kind == "playbook_on_task_start":
        return [AnsibleEvent("ansible-task", f"task {data.get('task') or data.get('name')}",
                      phase="start")]
    if kind in RESULT_PHASES:
        phase = _phase(kind, data)
        failure = failure_of(raw)
        error = failure.message if failure else None
        if phase == "ignored":
            error = result_message(data.get("res") or {})
        return [AnsibleEvent("ansible-host", f"{data.get('task')}: {phase}",
                      node=str(data.get("host") or "?"), phase=phase, error=error)]
    if kind == "playbook_on_no_hosts_matched":
        return [AnsibleEvent("warn", "no hosts matched the play's host pattern")]
    if kind == "warning":
        text = plain(str(raw.get("stdout") or ""))
        return [AnsibleEvent("warn", f"ansible: {text}")] if text else []
    if kind == "playbook_on_stats":
        return _stats(data)
    return []
