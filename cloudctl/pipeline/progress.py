"""A live progress view for people (rich): stages, nodes and releases, redrawn as events come.

Used when stderr is a terminal; otherwise ``TextSink`` prints plain lines."""

from __future__ import annotations

from typing import IO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .events import Event
from .state import STAGES

_STYLE = {
    "done": "green", "ready": "green", "applied": "green", "running": "yellow",
    "applying": "yellow", "progressing": "yellow", "waiting": "dim", "pending": "dim",
    "skipped": "dim", "failed": "bold red", "discovered": "cyan", "ok": "green",
    "changed": "yellow", "unreachable": "bold red", "ignored": "dim",
}


class RichProgress:
    def __init__(self, stream: IO[str]) -> None:
        self.console = Console(file=stream)
        self.stages: dict[str, tuple[str, str]] = {s: ("pending", "") for s in STAGES}
        self.nodes: dict[str, tuple[str, str]] = {}
        self.releases: dict[str, tuple[str, str]] = {}
        self.hosts: dict[str, tuple[str, str]] = {}
        """Ansible hosts of the hook stages: the last task's result on each."""
        self.live = Live(self._render(), console=self.console, refresh_per_second=8,
                         transient=False)
        self.live.start()

    def _table(self, title: str, rows: dict[str, tuple[str, str]]) -> Table:
        t = Table(title=title, title_justify="left", show_header=False, box=None,
                  pad_edge=False)
        t.add_column(min_width=12)
        t.add_column(min_width=10)
        t.add_column(overflow="fold")
        for name, (state, msg) in rows.items():
            t.add_row(name, Text(state, style=_STYLE.get(state, "")), msg)
        return t

    def _render(self) -> Group:
        parts = [self._table("stages", self.stages)]
        if self.nodes:
            parts.append(self._table("nodes", self.nodes))
        if self.releases:
            parts.append(self._table("releases", self.releases))
        if self.hosts:
            parts.append(self._table("ansible hosts", self.hosts))
        return Group(*parts)

    def emit(self, e: Event) -> None:
        kind = e.kind
        if kind.startswith("stage-"):
            state = {"stage-start": "running", "stage-done": "done",
                     "stage-skipped": "skipped", "stage-failed": "failed"}[kind]
            if e.stage in self.stages:
                self.stages[e.stage] = (state, e.error or e.message)
        elif kind == "node" and e.node:
            self.nodes[e.node] = (e.phase or "", e.message)
        elif kind == "release" and e.node:
            self.releases[e.node] = (e.phase or "", e.error or e.message)
        elif kind == "ansible-task" and e.stage in self.stages:
            self.stages[e.stage] = ("running", e.message)
        elif kind == "ansible-host" and e.node:
            self.hosts[e.node] = (e.phase or "", e.error or e.message)
        elif kind == "ansible-stats" and e.node:
            last = self.hosts.get(e.node, ("", ""))
            if last[0] not in ("failed", "unreachable"):  # keep what failed in view
                self.hosts[e.node] = (e.phase or "", e.message)
        elif kind == "warn":
            self.console.print(Text(f"! [{e.stage}] {e.message}", style="yellow"))
        self.live.update(self._render())

    def close(self) -> None:
        self.live.stop()
