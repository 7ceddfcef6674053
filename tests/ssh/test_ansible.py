"""Ansible through ansible-runner against a real OpenSSH server (tests/ssh/sshhost.py).

cloudctl runs in the client namespace (10.31.0.1) as an operator would; the server at
10.31.0.10 has its own network, mount and PID namespaces. Shown here: an inventory hook
playbook on the ``ssh`` group runs (a file written, a command run on the host), its events
are in the cluster's events.jsonl, a key with a passphrase works, a failing task stops the
stage with exit 11 naming the task and the host, and no key or passphrase is ever printed;
``cloudctl lab prepare-host --check`` runs the shipped hypervisor playbook in check mode (it
must not install anything: the server shares this machine's filesystem). Root only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from netns import require_root
from sshhost import NODE_IP, SshHost

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "from cloudctl.cli import main; main()"]
PHRASE = "tr0ub4dor&3-passphrase"

SITE = """\
- name: site work on the SSH nodes
  hosts: ssh
  gather_facts: false
  vars:
    ansible_python_interpreter: /usr/bin/python3
  tasks:
    - name: write the marker
      ansible.builtin.copy:
        dest: "{{ marker_dir }}/{{ inventory_hostname }}.txt"
        content: "{{ cloudctl.cluster.name }} {{ cloudctl_stage }} {{ inventory_hostname }}\\n"
        mode: "0644"
    - name: read the address
      ansible.builtin.command: ip -4 -o addr show
      register: addr
      changed_when: false
      failed_when: "'NODE_IP' not in addr.stdout"
""".replace("NODE_IP", NODE_IP)

BREAK = """\
- name: a hook that fails
  hosts: ssh
  gather_facts: false
  vars:
    ansible_python_interpreter: /usr/bin/python3
  tasks:
    - name: check the rescue disk
      ansible.builtin.shell: echo "no disk /dev/vdz here" >&2; exit 4
"""


@pytest.fixture(scope="module")
def host() -> Iterator[SshHost]:
    require_root("an OpenSSH server in network, mount and PID namespaces")
    with SshHost("an") as h:
        yield h


class Work:
    def __init__(self, root: Path, host: SshHost) -> None:
        self.root, self.host = root, host
        self.inventory = root / "inventory.yaml"
        self.cluster_dir = root / "clusters" / "rack1"
        self.markers = root / "markers"
        self.markers.mkdir()
        self.outputs: list[str] = []
        # a second key, with a passphrase, also authorized on the host
        self.phrase_key = root / "id_phrase"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", PHRASE, "-C", "phrase",
                        "-f", str(self.phrase_key)], check=True)
        with open(host.dir / "authorized_keys", "a") as f:
            f.write(Path(f"{self.phrase_key}.pub").read_text())
        self.cluster_dir.mkdir(parents=True)
        (self.cluster_dir / "known_hosts").write_text(host.known_hosts_line())

    def write_inventory(self, hooks: dict[str, Any]) -> list[str]:
        doc = yaml.safe_load((ROOT / "inventory.example.yaml").read_text())
        ssh_nodes = doc["nodes"][-2:]
        ssh_nodes[0]["ssh"] = {"address": NODE_IP, "keyRef": f"file:{self.host.client_key}"}
        ssh_nodes[1]["ssh"] = {"address": NODE_IP, "keyRef": f"file:{self.phrase_key}",
                               "passphraseRef": "env:TEST_KEY_PASSPHRASE"}
        doc["hooks"] = hooks
        self.inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
        return [n["name"] for n in ssh_nodes]

    def cloudctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "TEST_KEY_PASSPHRASE": PHRASE}
        p = subprocess.run(self.host.ctl.cmd([*CLI, *args]), cwd=self.root, env=env,
                           capture_output=True, text=True, timeout=180)
        self.outputs += [p.stdout, p.stderr]
        return p

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in
                (self.cluster_dir / "events.jsonl").read_text().splitlines()]

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.cluster_dir / "state.json").read_text())
        return data

    def assert_no_secret_leaked(self) -> None:
        secrets = [PHRASE]
        for key in (self.host.client_key, self.phrase_key):
            text = key.read_text()
            secrets += [text, *(ln for ln in text.splitlines() if ln and "-----" not in ln)]
        texts = [*self.outputs, (self.cluster_dir / "events.jsonl").read_text(),
                 (self.cluster_dir / "state.json").read_text()]
        for i, text in enumerate(texts):
            for s in secrets:
                assert s not in text, f"secret material in output #{i}"


def test_hook_playbook_runs_on_the_ssh_host_and_a_failing_task_stops_the_stage(
        host: SshHost, tmp_path: Path) -> None:
    w = Work(tmp_path, host)
    (tmp_path / "site.yml").write_text(SITE)
    names = w.write_inventory({"beforeBoot": [{"playbook": "site.yml",
                                               "extraVars": {"marker_dir": str(w.markers)}}]})
    run = w.cloudctl("bootstrap", "--only", "hooks-before-boot", "-i", str(w.inventory),
                     "-o", "json")
    assert run.returncode == 0, run.stderr
    # the play ran on the host, once per SSH node (both keys worked, one with its passphrase)
    for name in names:
        assert (w.markers / f"{name}.txt").read_text() == f"rack1 hooks-before-boot {name}\n"
    events = [e for e in w.events() if e["stage"] == "hooks-before-boot"]
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "stage-start" and kinds[-1] == "stage-done"
    assert {e["message"] for e in events if e["kind"] == "ansible-task"} == {
        "task write the marker", "task read the address"}
    results = {(e["node"], e["message"], e["phase"]) for e in events
               if e["kind"] == "ansible-host"}
    assert results == {(n, m, p) for n in names for m, p in (
        ("write the marker: changed", "changed"), ("read the address: ok", "ok"))}
    assert {e["node"]: e["phase"] for e in events if e["kind"] == "ansible-stats"} == {
        n: "ok" for n in names}
    assert events[-1]["message"] == "1 playbook(s) ran, 2 change(s)"
    assert w.state()["stages"]["hooks-before-boot"]["status"] == "done"
    assert host.calls() == []

    # the same stage with a hook whose task fails: exit 11, task and host named
    (tmp_path / "break.yml").write_text(BREAK)
    w.write_inventory({"beforeBoot": ["break.yml"]})
    run = w.cloudctl("bootstrap", "--only", "hooks-before-boot", "-i", str(w.inventory))
    assert run.returncode == 11, run.stderr
    assert "error: playbook break.yml: 2 task(s) failed:" in run.stderr
    for name in names:
        assert (f"task 'check the rescue disk' failed on host {name}: non-zero return code; "
                "no disk /dev/vdz here; rc=4") in run.stderr
    failed = w.events()[-1]
    assert (failed["stage"], failed["kind"]) == ("hooks-before-boot", "stage-failed")
    assert "check the rescue disk" in failed["error"]
    state = w.state()["stages"]["hooks-before-boot"]
    assert state["status"] == "failed" and "no disk /dev/vdz" in state["error"]
    w.assert_no_secret_leaked()


def test_prepare_host_check_mode_runs_the_shipped_playbook_and_changes_nothing(
        host: SshHost, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(host.known_hosts_line())
    p = subprocess.run(host.ctl.cmd([
        *CLI, "lab", "prepare-host", NODE_IP, "--key-file", str(host.client_key),
        "--known-hosts", str(known), "--var", "lab_pool_path=/nonexistent/cloudctl-pool",
        "--check", "-o", "json"]), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr
    events = [json.loads(line) for line in p.stdout.splitlines()]
    results = {e["message"].split(": ")[0]: e["phase"] for e in events
               if e["kind"] == "ansible-host"}
    assert results["Check the host runs Debian or Ubuntu"] == "ok"
    assert results["Install QEMU, libvirt and the BMC emulators' build prerequisites"] in (
        "ok", "changed")
    assert results["Create the storage pool directory"] == "changed"  # would be created
    for needs_packages in ("Run libvirtd", "Define the storage pool"):
        assert results[needs_packages] == "skipped"
    assert not Path("/nonexistent/cloudctl-pool").exists()
    assert not Path("/etc/systemd/network/60-cloudctl0.netdev").exists()
    assert host.client_key.read_text() not in p.stdout + p.stderr
