"""The Ansible view of a cloudctl inventory (pure), the SSH keys it references, the hook
stages' plans, and two real ansible-runner runs (syntax check of the shipped playbook; a
playbook Ansible cannot parse)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from cloudctl.ansible import (
    PlaybookRun,
    SshKey,
    ansible_inventory,
    extravars,
    inventory_keys,
    playbook,
    run_playbook,
    single_host_inventory,
)
from cloudctl.ansible.inventory import key_path
from cloudctl.errors import InputError, SecretsError
from cloudctl.inventory.models import Inventory
from cloudctl.pipeline.events import Events
from cloudctl.pipeline.hooks import (
    AfterBootstrapHooks,
    AfterPlatformHooks,
    BeforeBootHooks,
    HookFacts,
    HookInputError,
)
from cloudctl.pipeline.state import PipelineState, StageStatus

ROOT = Path(__file__).resolve().parents[2]
KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAAB\n"
       "AAAAMwAAAAtzc2gtZWQyNTUxOQAAACBnotreallyakeyjustbase64text==\n"
       "-----END OPENSSH PRIVATE KEY-----\n")


def inventory(tmp_path: Path, **hooks: Any) -> Inventory:
    data = yaml.safe_load((ROOT / "inventory.example.yaml").read_text())
    key = tmp_path / "id_test"
    key.write_text(KEY)
    data["nodes"][-1]["ssh"] = {"address": "10.31.0.10", "port": 2222, "user": "admin",
                                "keyRef": f"file:{key}", "passphraseRef": "env:TEST_PHRASE"}
    data["hooks"] = hooks
    return Inventory.model_validate(data)


def test_inventory_groups_hosts_and_ssh_settings(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    key_dir = tmp_path / "pdd" / "keys"
    out = ansible_inventory(inv, key_dir=key_dir, known_hosts=tmp_path / "known_hosts")
    groups = out["all"]["children"]
    assert set(groups["controlplane"]["hosts"]) == {n.name for n in inv.controlplanes}
    assert set(groups["worker"]["hosts"]) == {n.name for n in inv.workers}
    ssh_node = inv.nodes[-1]
    assert list(groups["ssh"]["hosts"]) == [ssh_node.name]
    host = groups["ssh"]["hosts"][ssh_node.name]
    assert (host["ansible_host"], host["ansible_port"], host["ansible_user"]) == (
        "10.31.0.10", 2222, "admin")
    assert host["ansible_ssh_private_key_file"] == str(key_path(key_dir, ssh_node.name))
    args = host["ansible_ssh_common_args"]
    assert "StrictHostKeyChecking=yes" in args and f"UserKnownHostsFile={tmp_path}" in args
    role_vars = groups[ssh_node.role]["hosts"][ssh_node.name]
    assert role_vars["ansible_host"] == "10.31.0.10"  # the SSH address, not the node IP
    first = inv.nodes[0]
    assert groups[first.role]["hosts"][first.name]["ansible_host"] == str(first.ip)
    assert out["all"]["hosts"]["localhost"]["ansible_connection"] == "local"
    assert KEY not in json.dumps(out)  # the key itself is only ever in the key file
    single = single_host_inventory("hv", "192.0.2.9", port=22, user="root", key_dir=key_dir,
                                   known_hosts=None)
    hv = single["all"]["children"]["ssh"]["hosts"]["hv"]
    assert hv["ansible_host"] == "192.0.2.9" and "UserKnownHostsFile" not in \
        hv["ansible_ssh_common_args"]


def test_extravars_are_the_inventory_as_json_data_plus_the_hooks_own(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    ev = extravars(inv, stage="hooks-after-bootstrap", inventory_file=tmp_path / "inv.yaml",
                   cluster_dir=tmp_path / "c", kubeconfig=tmp_path / "c" / "kubeconfig",
                   extra={"site": "lab", "cloudctl_stage": "ignored"})
    assert json.loads(json.dumps(ev)) == ev  # JSON-safe
    assert ev["cloudctl"]["cluster"]["talosVersion"] == inv.cluster.talos_version  # YAML names
    assert ev["cloudctl"]["nodes"][0]["ip"] == str(inv.nodes[0].ip)
    assert ev["site"] == "lab" and ev["cloudctl_stage"] == "hooks-after-bootstrap"
    assert ev["cloudctl_kubeconfig"].endswith("kubeconfig")


def test_keys_are_resolved_through_the_secret_references(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inv = inventory(tmp_path)
    monkeypatch.setenv("TEST_PHRASE", "correct horse battery")
    keys = inventory_keys(inv)
    assert keys == {inv.nodes[-1].name: SshKey(KEY, "correct horse battery")}
    secrets = keys[inv.nodes[-1].name].secrets()
    assert KEY in secrets and "correct horse battery" in secrets
    assert "AAAAMwAAAAtzc2gtZWQyNTUxOQAAACBnotreallyakeyjustbase64text==" in secrets
    monkeypatch.delenv("TEST_PHRASE")
    with pytest.raises(SecretsError, match="environment variable TEST_PHRASE is not set") as e:
        inventory_keys(inv)
    assert e.value.exit_code == 3


def test_hook_plans_skip_run_and_block_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "site.yml").write_text("[]\n")
    inv = inventory(tmp_path, afterBootstrap=["site.yml", {"playbook": "site.yml",
                                                           "limit": "ssh"}])
    facts = HookFacts(tmp_path, frozenset({tmp_path / "site.yml"}))
    before = BeforeBootHooks().plan(inv, facts)
    assert not before.runs and before.skip_reason() == "no hooks" and before.blocked is None
    after = AfterBootstrapHooks().plan(inv, facts)
    assert [s.reason for s in after.steps] == [
        f"run playbook {tmp_path / 'site.yml'}", f"run playbook {tmp_path / 'site.yml'} "
        "(limit ssh)"]
    assert AfterPlatformHooks().plan(inv, facts).skip_reason() == "no hooks"
    # a missing afterPlatform playbook blocks the first hook stage already
    bad = inventory(tmp_path, afterPlatform=[{"playbook": "nope.yml",
                                              "extraVars": {"cloudctl": 1}}])
    blocked = BeforeBootHooks().plan(bad, facts).blocked
    assert blocked is not None and blocked.error is HookInputError
    err = HookInputError(blocked.reason)
    assert err.exit_code == 2
    assert str(err) == f"invalid: hooks.afterPlatform[0].playbook: {tmp_path}/nope.yml is " \
                       "not a file"
    steps = BeforeBootHooks().plan(bad, facts).steps
    assert any(s.reason.startswith("hooks.afterPlatform[0].extraVars.cloudctl: is set by "
                                   "cloudctl") for s in steps)


def test_hook_facts_resolve_relative_playbooks_against_the_inventory(tmp_path: Path) -> None:
    (tmp_path / "hooks").mkdir()
    (tmp_path / "hooks" / "a.yml").write_text("[]\n")
    inv = inventory(tmp_path, beforeBoot=["hooks/a.yml", "hooks/b.yml"])
    ctx = SimpleNamespace(inventory=inv, inventory_path=tmp_path / "inventory.yaml")
    facts = asyncio.run(BeforeBootHooks().facts(ctx))  # type: ignore[arg-type]
    assert facts == HookFacts(tmp_path.resolve(), frozenset({tmp_path / "hooks" / "a.yml"}))
    blocked = BeforeBootHooks().plan(inv, facts).blocked
    assert blocked is not None and blocked.reason.startswith("hooks.beforeBoot[1].playbook: ")


def test_resume_passes_over_hook_stages_an_older_state_never_had() -> None:
    st = PipelineState(cluster="rack1")
    for name in ("preflight", "image", "boot"):
        st.stage(name).status = StageStatus.DONE
    assert st.first_unfinished() == "discover"  # not hooks-before-boot: boot is done
    st = PipelineState(cluster="rack1")
    for name in ("preflight", "image"):
        st.stage(name).status = StageStatus.DONE
    assert st.first_unfinished() == "hooks-before-boot"
    st.stage("hooks-before-boot").status = StageStatus.FAILED
    st.stage("boot").status = StageStatus.DONE
    assert st.first_unfinished() == "hooks-before-boot"  # it ran and failed


def test_shipped_playbook_passes_ansibles_syntax_check(tmp_path: Path) -> None:
    run = PlaybookRun(
        playbook=playbook("prepare-hypervisor.yml"),
        inventory=lambda d: single_host_inventory("hv", "192.0.2.9", port=22, user="root",
                                                  key_dir=d, known_hosts=None),
        source="prepare-hypervisor.yml", syntax_check=True)
    result = run_playbook(run, stage="t", events=Events())
    assert (result.status, result.rc) == ("successful", 0)


def test_a_playbook_ansible_cannot_parse_is_an_input_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("- hosts: localhost\n  tasks:\n    - no_such_module_anywhere: {}\n")
    run = PlaybookRun(playbook=bad, inventory=lambda d: {"all": {"hosts": {"localhost": {}}}},
                      source="hooks.beforeBoot[0].playbook")
    with pytest.raises(InputError) as exc:
        run_playbook(run, stage="t", events=Events())
    assert exc.value.exit_code == 2
    assert str(exc.value).startswith(f"invalid: hooks.beforeBoot[0].playbook: "
                                     f"ansible-playbook cannot run {bad}")
    assert "no_such_module_anywhere" in str(exc.value)


def test_a_key_with_a_passphrase_is_opened_before_ansible_sees_it() -> None:
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    locked = private.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.OpenSSH,
                                   ser.BestAvailableEncryption(b"open sesame")).decode()
    plain = SshKey(locked, "open sesame").unlocked("cp1")
    assert plain != locked and "OPENSSH PRIVATE KEY" in plain
    opened = ser.load_ssh_private_key(plain.encode(), None)
    assert opened.public_key().public_bytes_raw() == private.public_key().public_bytes_raw()  # type: ignore[union-attr]
    assert SshKey(KEY).unlocked("cp1") == KEY  # no passphrase: the key as it is
    with pytest.raises(SecretsError, match="cp1: the SSH key passphrase does not open") as e:
        SshKey(locked, "wrong").unlocked("cp1")
    assert e.value.exit_code == 3
