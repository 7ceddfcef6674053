"""ansible-runner events -> cloudctl events, from event dicts recorded off real runs
(tests/data/ansible: a mixed run — changed, ok, skipped, an ignored failure, an unreachable
host — and a run whose shell task fails)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cloudctl.ansible.events import (
    AnsibleEvent,
    Failure,
    failure_of,
    plain,
    result_message,
    translate,
)
from cloudctl.pipeline.events import Events

DATA = Path(__file__).resolve().parents[1] / "data" / "ansible"


def recorded(name: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads((DATA / name).read_text())
    return events


def all_events(name: str) -> list[AnsibleEvent]:
    return [e for raw in recorded(name) for e in translate(raw)]


def test_mixed_run_translates_to_play_task_host_and_stats_events() -> None:
    events = all_events("events-mixed.json")
    summary = [(e.kind, e.node, e.phase, e.message) for e in events]
    assert summary == [
        ("ansible-playbook", None, "start", "playbook rec.yml"),
        ("ansible-playbook", None, "play", "play local work (hosts: localhost)"),
        ("ansible-task", None, "start", "task write a marker"),
        ("ansible-host", "localhost", "changed", "write a marker: changed"),
        ("ansible-task", None, "start", "task look around"),
        ("ansible-host", "localhost", "ok", "look around: ok"),
        ("ansible-task", None, "start", "task never runs"),
        ("ansible-host", "localhost", "skipped", "never runs: skipped"),
        ("ansible-task", None, "start", "task tolerated failure"),
        ("ansible-host", "localhost", "ignored", "tolerated failure: ignored"),
        ("ansible-playbook", None, "play", "play remote work (hosts: far)"),
        ("ansible-task", None, "start", "task ping the far host"),
        ("ansible-host", "far", "unreachable", "ping the far host: unreachable"),
        ("ansible-stats", "far", "failed",
         "ok=0 changed=0 failed=0 unreachable=1 skipped=0"),
        ("ansible-stats", "localhost", "ok",
         "ok=3 changed=2 failed=0 unreachable=0 skipped=1"),  # as Ansible counts
    ]
    ignored = next(e for e in events if e.phase == "ignored")
    assert ignored.error == "non-zero return code; rc=1"
    unreachable = next(e for e in events if e.phase == "unreachable")
    assert unreachable.error is not None
    assert "port 1: Connection refused" in unreachable.error


def test_failures_are_failed_or_unreachable_hosts_never_ignored_ones() -> None:
    mixed = [f for raw in recorded("events-mixed.json") if (f := failure_of(raw))]
    assert len(mixed) == 1
    assert mixed[0].unreachable and mixed[0].host == "far"
    assert mixed[0].task == "ping the far host"
    assert str(mixed[0]).startswith("task 'ping the far host' could not reach host far: ")
    failed = [f for raw in recorded("events-failed.json") if (f := failure_of(raw))]
    assert failed == [Failure(task="break here", host="localhost",
                              message="non-zero return code; disk /dev/sdz is missing; rc=3")]
    assert str(failed[0]) == ("task 'break here' failed on host localhost: non-zero return "
                              "code; disk /dev/sdz is missing; rc=3")
    host = [e for e in all_events("events-failed.json") if e.kind == "ansible-host"]
    assert [(e.phase, e.error) for e in host] == [("failed", failed[0].message)]


def test_result_message_and_plain_text() -> None:
    assert result_message({"msg": "boom"}) == "boom"
    assert result_message({}) == "failed"
    long = result_message({"msg": "x", "stderr": "e" * 1000})
    assert long.endswith("e" * 400) and "..." in long
    assert plain("\x1b[0;31m[ERROR]: no\x1b[0m\n") == "[ERROR]: no"
    setup = {"msg": "The following modules failed to execute: ansible.legacy.setup.",
             "failed_modules": {"ansible.legacy.setup": {
                 "msg": "MODULE FAILURE", "module_stderr": "python3.13: command not found\n",
                 "rc": 127}}}
    assert result_message(setup) == (
        "The following modules failed to execute: ansible.legacy.setup.; "
        "ansible.legacy.setup: MODULE FAILURE; python3.13: command not found; rc=127")


def test_other_events_are_dropped_and_warnings_kept() -> None:
    assert translate({"event": "runner_on_start", "event_data": {"host": "h"}}) == []
    assert translate({"event": "verbose", "stdout": "x"}) == []
    warn = translate({"event": "warning", "stdout": "\x1b[1;35m[WARNING]: odd\x1b[0m"})
    assert [(e.kind, e.message) for e in warn] == [("warn", "ansible: [WARNING]: odd")]
    none = translate({"event": "playbook_on_no_hosts_matched", "event_data": {}})
    assert [e.kind for e in none] == ["warn"]


def test_events_redact_secrets_added_for_a_run() -> None:
    events = Events()
    events.set_secrets(["bundle-secret-123"])
    events.add_secrets(["key-material-abcdef"])
    events.set_secrets(["bundle-secret-456"])  # the bundle reloaded: run secrets stay
    events("s", "ansible-host", "saw key-material-abcdef and bundle-secret-456",
           error="key-material-abcdef")
    last = events.history[-1]
    assert last.message == "saw [REDACTED] and [REDACTED]"
    assert last.error == "[REDACTED]"


def test_progress_view_shows_the_task_under_way_and_each_hosts_last_result() -> None:
    import io

    from cloudctl.pipeline.events import Event
    from cloudctl.pipeline.progress import RichProgress

    stream = io.StringIO()
    view = RichProgress(stream)
    try:
        view.emit(Event("hooks-after-bootstrap", "stage-start", "hooks-after-bootstrap"))
        for ev in all_events("events-failed.json"):
            view.emit(Event("hooks-after-bootstrap", ev.kind, ev.message, node=ev.node,
                            phase=ev.phase, error=ev.error))
        assert view.stages["hooks-after-bootstrap"] == ("running", "task break here")
        assert view.hosts == {"localhost": (
            "failed", "non-zero return code; disk /dev/sdz is missing; rc=3")}
        view.emit(Event("hooks-after-bootstrap", "ansible-stats", "ok=1 changed=0 failed=0 "
                        "unreachable=0 skipped=0", node="far", phase="ok"))
        assert view.hosts["far"] == ("ok", "ok=1 changed=0 failed=0 unreachable=0 skipped=0")
    finally:
        view.close()
    assert "ansible hosts" in stream.getvalue()
