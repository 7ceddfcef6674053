"""Inventory hooks in ``cloudctl bootstrap --emulate``: one localhost playbook at each of the
three boundaries records the stage it ran in, a cloudctl variable and what existed at that
moment (bootstrap.json, the kubeconfig), which pins each hook between the stages it belongs
to; events.jsonl holds its Ansible events between its stage's start and end; --plan lists the
playbooks; a finished run resumed runs no hook again."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudctl.pipeline.state import STAGES

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "from cloudctl.cli import main; main()"]
HOOK_STAGES = ("hooks-before-boot", "hooks-after-bootstrap", "hooks-after-platform")

RECORD = """\
- name: record the boundary
  hosts: localhost
  gather_facts: false
  tasks:
    - name: record the stage
      ansible.builtin.lineinfile:
        path: "{{ marker }}"
        create: true
        mode: "0644"
        line: >-
          {{ cloudctl_stage }} {{ cloudctl.cluster.name }} nodes={{ cloudctl.nodes | length }}
          bootstrapped={{ (cloudctl_cluster_dir ~ '/bootstrap.json') is exists }}
          kubeconfig={{ cloudctl_kubeconfig is exists }}
"""


class Work:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.inventory = root / "inventory.yaml"
        self.marker = root / "marker.txt"
        self.cluster_dir = root / "clusters" / "rack1"
        (root / "hooks").mkdir()
        (root / "hooks" / "record.yml").write_text(RECORD)
        doc = yaml.safe_load((ROOT / "inventory.example.yaml").read_text())
        hook = {"playbook": "hooks/record.yml", "extraVars": {"marker": str(self.marker)}}
        doc["hooks"] = {"beforeBoot": [hook], "afterBootstrap": [hook], "afterPlatform": [hook]}
        self.inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
        self.nodes = len(doc["nodes"])

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args, "-i", str(self.inventory)], cwd=self.root,
                              capture_output=True, text=True, timeout=300)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in
                (self.cluster_dir / "events.jsonl").read_text().splitlines()]


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Work]:
    w = Work(tmp_path)
    try:
        yield w
    finally:
        subprocess.run([*CLI, "emulate", "stop", "-i", str(w.inventory)], cwd=tmp_path,
                       capture_output=True, timeout=60)


def test_hooks_run_at_their_boundaries_of_an_emulated_bootstrap(work: Work) -> None:
    plan = work.cli("bootstrap", "--emulate", "--plan")
    assert plan.returncode == 0, plan.stderr
    for stage in HOOK_STAGES:
        assert f"run   {stage} record.yml: run playbook {work.root / 'hooks/record.yml'}" in \
            plan.stdout, plan.stdout
    t0 = time.monotonic()
    run = work.cli("bootstrap", "--emulate", "--timeout", "120")
    elapsed = time.monotonic() - t0
    assert run.returncode == 0, run.stderr
    n = work.nodes
    assert work.marker.read_text().splitlines() == [
        f"hooks-before-boot rack1 nodes={n} bootstrapped=False kubeconfig=False",
        f"hooks-after-bootstrap rack1 nodes={n} bootstrapped=True kubeconfig=False",
        f"hooks-after-platform rack1 nodes={n} bootstrapped=True kubeconfig=True",
    ]
    events = work.events()
    starts = [e["stage"] for e in events if e["kind"] == "stage-start"]
    assert starts == list(STAGES)
    for stage in HOOK_STAGES:
        at = [i for i, e in enumerate(events) if e["stage"] == stage]
        mine = [events[i] for i in at]
        assert mine[0]["kind"] == "stage-start" and mine[-1]["kind"] == "stage-done"
        assert [(e["kind"], e["message"], e.get("node"), e.get("phase")) for e in mine[1:-1]
                if e["kind"].startswith("ansible-")] == [
            ("ansible-playbook", "playbook record.yml", None, "start"),
            ("ansible-playbook", "play record the boundary (hosts: localhost)", None, "play"),
            ("ansible-task", "task record the stage", None, "start"),
            ("ansible-host", "record the stage: changed", "localhost", "changed"),
            ("ansible-stats", "ok=1 changed=1 failed=0 unreachable=0 skipped=0", "localhost",
             "ok"),
        ]
        assert mine[-1]["message"] == "1 playbook(s) ran, 1 change(s)"
        # nothing of another stage happens while the hook runs
        assert at == list(range(at[0], at[-1] + 1))
    state = json.loads((work.cluster_dir / "state.json").read_text())
    assert {s: state["stages"][s]["status"] for s in HOOK_STAGES} == dict.fromkeys(
        HOOK_STAGES, "done")
    again = work.cli("bootstrap", "--emulate", "--resume", "-o", "json")
    assert again.returncode == 0, again.stderr
    assert not [line for line in again.stdout.splitlines() if '"stage-start"' in line]
    assert len(work.marker.read_text().splitlines()) == 3  # finished hooks do not rerun
    print(f"emulated bootstrap with three hooks: {elapsed:.1f}s")
