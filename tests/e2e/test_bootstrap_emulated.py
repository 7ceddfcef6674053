"""``cloudctl bootstrap --emulate`` end to end, as a user runs it: the CLI in a subprocess, in a
temp dir holding a copy of inventory.example.yaml, against the detached emulated rack (Talos
nodes over Ed25519 mTLS + the Kubernetes API emulator with the cluster's CA).

Covers issue 5's "must show": platform Ready with HelmReleases applied in dependsOn order and
accepted by the emulator's CRD validation; SIGKILL at every stage boundary and in the middle
of apply, then --resume (Bootstrap RPC exactly once, no duplicate objects); a failing release
shows its reason and exits 8; --plan on a fresh and a half-done cluster; no secret in any
output. And issue 8's: faults injected with `emulate start --fault` (a release failing twice
then healing, one always failing, KubeVirt never deployed); the emulated rack stopped and the
README command rerun; a stale bootstrap marker; Ctrl-C and --resume; a corrupt state file."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cloudctl.errors import RemoteError
from cloudctl.inventory import load_inventory
from cloudctl.kube import Kube, apply_manifests
from cloudctl.pipeline.state import STAGES
from cloudctl.render.gitops import local_chart_manifests, platform_releases
from cloudctl.secrets import SecretsStore

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory.example.yaml"
CLI = [sys.executable, "-c", "from cloudctl.cli import main; main()"]
INV = load_inventory(EXAMPLE).inventory
RELEASES = platform_releases(INV)
LOCAL = set(local_chart_manifests(INV))


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]


class Workdir:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.inventory = root / "inventory.yaml"
        shutil.copy(EXAMPLE, self.inventory)
        self.cluster_dir = root / "clusters" / "rack1"
        self.outputs: list[str] = []

    def cli(self, *args: str, timeout: float = 180) -> Run:
        p = subprocess.run([*CLI, *args, "-i", str(self.inventory)], cwd=self.root,
                           capture_output=True, text=True, timeout=timeout)
        self.outputs += [p.stdout, p.stderr]
        return Run(p.returncode, p.stdout, p.stderr)

    def bootstrap(self, *args: str, timeout: str = "120") -> Run:
        return self.cli("bootstrap", "--emulate", "--timeout", timeout, *args)

    def start_rack(self, *faults: str) -> None:
        run = self.cli("emulate", "start", *(a for f in faults for a in ("--fault", f)))
        assert run.code == 0, run.stderr

    def bootstrap_killed_at(self, match: Any, *args: str) -> list[dict[str, Any]]:
        """Run ``bootstrap --emulate -o json`` and SIGKILL it at the first event ``match``es."""
        proc = subprocess.Popen(
            [*CLI, "bootstrap", "--emulate", "--timeout", "120", "-o", "json", *args, "-i",
             str(self.inventory)],
            cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        seen: list[dict[str, Any]] = []
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                self.outputs.append(line)
                event = json.loads(line)
                seen.append(event)
                if match(event):
                    proc.send_signal(signal.SIGKILL)
                    break
            else:
                pytest.fail(f"run ended before the kill point: {seen[-3:]}")
        finally:
            proc.wait(30)
            assert proc.stderr is not None
            self.outputs.append(proc.stderr.read())
            proc.stdout.close()
            proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
        return seen

    def rack(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.cluster_dir / "emulator" / "rack.json")
                                          .read_text())
        return data

    def wait_rack(self, pred: Any, timeout: float = 5.0) -> dict[str, Any]:
        """rack.json is republished within ~50 ms of a change."""
        deadline = time.monotonic() + timeout
        while True:
            data = self.rack()
            if pred(data) or time.monotonic() > deadline:
                return data
            time.sleep(0.05)

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.cluster_dir / "state.json").read_text())
        return data

    def secrets(self) -> list[str]:
        return SecretsStore(self.root / "secrets" / "rack1").load().secret_strings()

    def assert_no_secret_leaked(self) -> None:
        texts = list(self.outputs)
        for name in ("events.jsonl", "state.json", "bootstrap.json", "emulator/rack.json",
                     "emulator/rack.log"):
            path = self.cluster_dir / name
            if path.is_file():
                texts.append(path.read_text())
        assert len(texts) > 3
        secrets = [s for s in self.secrets() if len(s) >= 8]
        assert len(secrets) > 10
        for i, text in enumerate(texts):
            for s in secrets:
                assert s not in text, f"secret fragment in output #{i}"


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Workdir]:
    w = Workdir(tmp_path)
    try:
        yield w
    finally:
        subprocess.run([*CLI, "emulate", "stop", "-i", str(w.inventory)], cwd=tmp_path,
                       capture_output=True, timeout=60)


def _kube(w: Workdir) -> Kube:
    return Kube.from_kubeconfig(w.cluster_dir / "kubeconfig")


def check_final_state(w: Workdir, *, interrupted_apply: bool = False) -> None:
    state = w.state()
    assert all(state["stages"][s]["status"] in ("done", "skipped") for s in STAGES), state
    assert state["stages"]["boot"]["status"] == "skipped"
    marker = json.loads((w.cluster_dir / "bootstrap.json").read_text())
    assert marker["bootstrapped"] == "cp1" and "bootstrapped" not in state
    assert {n: v["phase"] for n, v in state["nodes"].items()} == {
        n.name: "ready" for n in INV.nodes}
    assert {n for n, r in state["releases"].items() if r["state"] == "ready"} == {
        r.name for r in RELEASES}
    rack = w.wait_rack(lambda r: all(v["joined"] for v in r["nodes"].values()))
    # exactly one Bootstrap RPC reached any node, ever
    assert rack["bootstrap_rpcs"] == 1
    assert {n: v["bootstrap_rpcs"] for n, v in rack["nodes"].items() if v["bootstrap_rpcs"]} == {
        "cp1": 1}
    # ApplyConfiguration calls per node: one dry run + one apply; a rerun sends none to nodes
    # already running. A run killed mid-apply may have dry-run (or applied to) nodes that the
    # resumed run then finds still in maintenance mode and configures again.
    calls = {n: v["apply_calls"] for n, v in rack["nodes"].items()}
    if interrupted_apply:
        assert all(2 <= c <= 4 for c in calls.values()), calls
    else:
        assert calls == {n.name: 2 for n in INV.nodes}
    # the platform's releases, and the example tenant's CNI (into its own API)
    helm = {r.name for r in RELEASES if r.name not in LOCAL} | \
        {f"tenant-{t.name}/cilium" for t in INV.tenants}
    assert set(rack["helmreleases"]) == helm
    assert all(r["ready"] == "True" and r["generation"] == 1
               for r in rack["helmreleases"].values()), rack["helmreleases"]
    with _kube(w) as kube:
        hrs = kube.list("helm.toolkit.fluxcd.io/v2", "HelmRelease")
        assert sorted(  # no duplicates
            h["metadata"]["name"] if h["metadata"]["namespace"] == "flux-system"
            else f"{h['metadata']['namespace']}/{h['metadata']['name']}" for h in hrs
        ) == sorted(helm)
        assert len(kube.list("v1", "Node")) == len(INV.nodes)
        assert len(kube.list("kubevirt.io/v1", "KubeVirt")) == 1
        assert len(kube.list("cdi.kubevirt.io/v1beta1", "CDI")) == 1
        assert [p["metadata"]["name"] for p in kube.list("metallb.io/v1beta1",
                                                          "IPAddressPool")] == ["public"]
    assert stat.S_IMODE((w.cluster_dir / "kubeconfig").stat().st_mode) == 0o600


def test_emulated_bootstrap_reaches_platform_ready(work: Workdir) -> None:
    t0 = time.monotonic()
    run = work.bootstrap("-o", "json")
    elapsed = time.monotonic() - t0
    assert run.code == 0, run.stderr
    events = run.events
    done = [(e["stage"], e["kind"]) for e in events if e["kind"] in ("stage-done",
                                                                      "stage-skipped")]
    assert done == [(s, "stage-skipped" if s == "boot" or s.startswith("hooks-")
                     else "stage-done") for s in STAGES]  # no hooks in the example
    assert any(e["stage"] == "preflight" and "no host checks (emulated rack" in e["message"]
               for e in events)
    assert any("secrets bundle created" in e["message"] for e in events)
    # HelmReleases applied (SSA) one by one in dependsOn order; the local charts applied by
    # cloudctl itself after their dependencies were Ready
    applied = [e["node"] for e in events if e["kind"] == "release" and e["phase"] == "applied"]
    assert applied == [r.name for r in RELEASES if r.name not in LOCAL]
    ready_at: dict[str, int] = {}
    for i, e in enumerate(events):
        if e["kind"] == "release" and e["phase"] == "ready":
            ready_at.setdefault(e["node"], i)
    assert set(ready_at) == {r.name for r in RELEASES}
    for rel in RELEASES:
        for dep in rel.depends_on:
            assert ready_at[dep] < ready_at[rel.name], (dep, rel.name)
    check_final_state(work)
    # The Flux objects went through the emulator's CRD validation: it rejects a HelmRelease
    # the CRD schema forbids (so the ones it holds were accepted under the same rules)
    with _kube(work) as kube:
        bad = {"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
               "metadata": {"name": "bad", "namespace": "flux-system"},
               "spec": {"interval": 5, "chart": {"spec": {"chart": "x"}}}}
        with pytest.raises(RemoteError) as exc:
            kube.server_side_apply(bad, field_manager="test")
        assert "422" in str(exc.value) and "spec.interval" in str(exc.value)
        # ... and cloudctl applies with fieldValidation=Strict: unknown fields are refused
        unknown = {**bad, "spec": {"interval": "5m", "chart": {"spec": {
            "chart": "x", "sourceRef": {"kind": "HelmRepository", "name": "cilium"}}},
            "bogusField": 1}}
        with pytest.raises(RemoteError) as exc:
            kube.server_side_apply(unknown, field_manager="test")
        assert "bogusField" in str(exc.value)
    # the event log on disk is the same stream
    on_disk = (work.cluster_dir / "events.jsonl").read_text().splitlines()
    assert len(on_disk) == len(events)

    # a plain rerun is idempotent: every object unchanged, no second Bootstrap, same uids
    uids = {n: r["uid"] for n, r in work.rack()["helmreleases"].items()}
    again = work.bootstrap("-o", "json")
    assert again.code == 0, again.stderr
    changed = [e["message"] for e in again.events
               if e["message"].endswith((" created", " configured"))]
    assert changed == []
    check_final_state(work)
    assert {n: r["uid"] for n, r in work.rack()["helmreleases"].items()} == uids

    status = work.cli("status", "-o", "json")
    assert status.code == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["next_stage"] is None and report["live"] == {"nodes": True,
                                                               "kubernetes": True}
    assert all(n["running"] and n["phase"] == "ready" for n in report["nodes"].values())
    assert all(r["live"] == "ready" for n, r in report["releases"].items() if n not in LOCAL)
    text = work.cli("status")
    assert text.code == 0 and "cilium" in text.stdout and "worker2" in text.stdout
    work.assert_no_secret_leaked()
    print(f"emulated bootstrap of inventory.example.yaml: {elapsed:.1f}s")


def _boundary(stage: str) -> Any:
    return lambda e: e["stage"] == stage and e["kind"] in ("stage-done", "stage-skipped")


def test_sigkill_at_every_stage_boundary_and_mid_apply_then_resume(work: Workdir) -> None:
    """One chain of runs: each is SIGKILLed at the next kill point and the next run resumes
    (so every boundary is covered without running the pipeline eleven times)."""
    kill_points: list[tuple[str, Any]] = [
        (f"after {s}", _boundary(s)) for s in ("preflight", "image", "boot", "discover")
    ]
    # the first node apply event: configs are on their way to every node, none is running yet
    kill_points.append(("mid apply", lambda e: e["stage"] == "apply" and e["kind"] == "node"
                        and e["phase"] == "applying"))
    kill_points += [(f"after {s}", _boundary(s))
                    for s in ("apply", "bootstrap", "kubeconfig", "flux", "platform",
                              "tenants")]
    resumed_from = []
    for i, (label, match) in enumerate(kill_points):
        args = () if i == 0 else ("--resume",)
        seen = work.bootstrap_killed_at(match, *args)
        started = [e["stage"] for e in seen if e["kind"] == "stage-start"]
        resumed_from.append((label, started[0] if started else None))
        if label == "mid apply":
            state = work.state()
            assert state["stages"]["apply"]["status"] == "running"
            assert any(n["phase"] == "applying" for n in state["nodes"].values())
        if label == "after bootstrap":
            # --plan on a half-done cluster lists exactly the remaining work
            plan = work.bootstrap("--plan", "--resume", "-o", "json")
            assert plan.code == 0, plan.stderr
            runs = [(e["stage"], e["node"]) for e in plan.events if e["phase"] == "run"]
            assert runs == [("kubeconfig", None), ("flux", None)] + [
                ("platform", r.name) for r in RELEASES] + [
                ("tenants", t.name) for t in INV.tenants] + [("tenants", None), ("done", None)]
            skipped = {e["stage"] for e in plan.events if e["phase"] == "skip"}
            assert skipped == {"preflight", "image", "hooks-before-boot", "boot", "discover",
                               "apply", "bootstrap", "hooks-after-bootstrap",
                               "hooks-after-platform"}
            text = work.bootstrap("--plan")
            assert text.code == 0 and "run   kubeconfig" in text.stdout
            assert "skip  bootstrap" in text.stdout and "every control plane is a member" in \
                text.stdout
            assert work.rack()["bootstrap_rpcs"] == 1
    # every run resumed at the stage after the one it was killed at (or the one in flight)
    assert resumed_from[0] == ("after preflight", "preflight")
    assert resumed_from[5][1] == "apply"  # killed mid apply -> apply again
    final = work.bootstrap("--resume", "-o", "json")
    assert final.code == 0, final.stderr
    assert [e["stage"] for e in final.events if e["kind"] == "stage-start"] == ["done"]
    check_final_state(work, interrupted_apply=True)
    work.assert_no_secret_leaked()


def test_failing_release_shows_reason_and_exits_8(work: Workdir) -> None:
    """A release helm-controller retries forever (remediation.retries: -1) that never heals:
    shown as retrying, then exit 8 with its last reason when the wait's time is up."""
    msg = "speaker DaemonSet crashed"
    work.start_rack(f"release-fails:metallb:message={msg}")
    t0 = time.monotonic()
    run = work.bootstrap(timeout="25")  # each wait; generous for a loaded machine
    assert run.code == 8, run.stderr
    assert time.monotonic() - t0 < 120
    assert "HelmRelease flux-system/metallb still failing after 25s" in run.stderr
    assert "InstallFailed: Helm install failed for release metallb-system/metallb" in run.stderr
    assert msg in run.stderr
    assert "retrying after 1 failed attempt(s)" in run.stderr
    state = work.state()
    assert state["stages"]["platform"]["status"] == "failed"
    assert "InstallFailed" in state["stages"]["platform"]["error"]
    assert state["releases"]["metallb"]["state"] == "retrying"
    # json mode: the failure is an event and the error document on stderr
    again = work.bootstrap("--resume", "-o", "json", timeout="25")
    assert again.code == 8
    failed = [e for e in again.events if e["kind"] == "stage-failed"]
    assert failed and failed[0]["stage"] == "platform" and msg in failed[0]["error"]
    assert json.loads(again.stderr.strip().splitlines()[-1])["error"] == "PlatformError"
    work.assert_no_secret_leaked()


def test_release_failing_twice_then_healing_ends_ready(work: Workdir) -> None:
    work.start_rack("release-fails:kube-ovn:times=2")
    run = work.bootstrap("-o", "json", timeout="60")
    assert run.code == 0, run.stderr
    tries = [e["message"] for e in run.events
             if e["node"] == "kube-ovn" and e["phase"] == "retrying"]
    assert any("retrying after 1 failed attempt(s); last: InstallFailed" in m for m in tries)
    assert any("retrying after 2 failed attempt(s)" in m for m in tries)
    assert work.state()["releases"]["kube-ovn"]["state"] == "ready"
    assert work.state()["stages"]["done"]["status"] == "done"


def test_kubevirt_not_deployed_is_named_and_not_reported_up(work: Workdir) -> None:
    work.start_rack("component-not-deployed:kubevirt:reason=InstallStrategyFailed,"
                    "message=virt-handler cannot start")
    run = work.bootstrap(timeout="15")
    assert run.code == 8, run.stderr
    assert "KubeVirt not deployed after 15s" in run.stderr
    assert "KubeVirt kubevirt/kubevirt: phase Deploying" in run.stderr
    assert "virt-handler cannot start" in run.stderr
    assert "is up" not in run.stdout
    assert work.state()["stages"].get("done", {}).get("status", "pending") == "pending"


def test_rerun_after_the_emulated_rack_stopped_is_a_new_cluster(work: Workdir) -> None:
    """The README main command, `emulate stop`, the README main command again: the new rack's
    machines are new, so the run builds a new cluster (within seconds, not a 15-minute wait on
    a stale bootstrap marker)."""
    assert work.bootstrap().code == 0
    assert work.cli("emulate", "stop").code == 0
    t0 = time.monotonic()
    run = work.bootstrap()
    assert run.code == 0, run.stderr
    assert time.monotonic() - t0 < 60
    assert "is a new rack" in run.stderr and "new cluster" in run.stderr
    assert work.rack()["bootstrap_rpcs"] == 1  # the new rack was bootstrapped, once
    assert (work.cluster_dir / "bootstrap.json.old").is_file()
    check_final_state(work)
    # --resume of a finished run checks the rack too: a stopped rack is not "still up"
    assert work.cli("emulate", "stop").code == 0
    resumed = work.bootstrap("--resume")
    assert resumed.code == 0, resumed.stderr
    assert "is a new rack" in resumed.stderr and "[bootstrap] Bootstrap called" in resumed.stderr
    check_final_state(work)


def test_stale_bootstrap_marker_is_an_error_naming_the_file(work: Workdir) -> None:
    """Nodes reinstalled under an old cluster directory (the state does not know the rack
    changed, as on bare metal): the marker says bootstrapped, no control plane has etcd
    members. Exit 9 in seconds, naming the marker file and what to do; Bootstrap not called."""
    assert work.bootstrap().code == 0
    assert work.cli("emulate", "stop").code == 0
    state = work.state()
    state["rack"] = None  # as on bare metal: no rack identity to compare
    (work.cluster_dir / "state.json").write_text(json.dumps(state))
    t0 = time.monotonic()
    run = work.bootstrap()
    assert run.code == 9, run.stderr
    assert time.monotonic() - t0 < 60
    marker = str(work.cluster_dir / "bootstrap.json")
    assert f"{marker} records etcd bootstrapped on cp1" in run.stderr
    assert "no control plane has an etcd member" in run.stderr and "move" in run.stderr
    assert work.rack()["bootstrap_rpcs"] == 0
    plan = work.bootstrap("--plan")
    assert plan.code == 0 and "block bootstrap" in plan.stdout


def test_ctrl_c_records_interrupted_and_resume_converges(work: Workdir) -> None:
    proc = subprocess.Popen(
        [*CLI, "bootstrap", "--emulate", "--timeout", "120", "-o", "json", "-i",
         str(work.inventory)],
        cwd=work.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    for line in proc.stdout:
        event = json.loads(line)
        if event["stage"] == "platform" and event["kind"] == "stage-start":
            proc.send_signal(signal.SIGINT)
            break
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted during stage platform" in err and "--resume" in err
    assert "Traceback" not in err and "Aborted" not in err
    assert work.state()["stages"]["platform"]["status"] == "interrupted"
    status = work.cli("status")
    assert status.code == 0 and "interrupted during stage platform" in status.stdout
    assert json.loads(work.cli("status", "-o", "json").stdout)["interrupted"] == "platform"
    final = work.bootstrap("--resume")
    assert final.code == 0, final.stderr
    check_final_state(work)


def test_corrupt_state_file_is_an_error_naming_it(work: Workdir) -> None:
    work.cluster_dir.mkdir(parents=True)
    (work.cluster_dir / "state.json").write_text('{"version": 2, "cluster": "rack1", "sta')
    for args in (("status",), ("bootstrap", "--emulate", "--resume")):
        run = work.cli(*args)
        assert run.code == 9, (args, run.stderr)
        assert f"{work.cluster_dir / 'state.json'}: corrupt state file" in run.stderr
        assert "Traceback" not in run.stderr
    (work.cluster_dir / "state.json").write_text('{"version": 2, "cluster": "other"}')
    run = work.cli("status")
    assert run.code == 9 and "belongs to cluster 'other'" in run.stderr


def test_plan_on_a_fresh_cluster_changes_nothing(work: Workdir) -> None:
    plan = work.bootstrap("--plan", "-o", "json")
    assert plan.code == 0, plan.stderr
    items = [(e["stage"], e["node"], e["phase"]) for e in plan.events]
    assert items[0] == ("preflight", None, "run")
    assert ("boot", None, "skip") in items
    assert [i for i in items if i[2] == "skip"] == [
        ("image", "assets", "skip"), ("hooks-before-boot", None, "skip"), ("boot", None, "skip"),
        ("hooks-after-bootstrap", None, "skip"), ("hooks-after-platform", None, "skip")]
    assert [n for s, n, _ in items if s == "apply"] == [n.name for n in INV.nodes]
    assert [n for s, n, _ in items if s == "platform"] == [r.name for r in RELEASES]
    assert "secrets missing: will be created" in plan.stdout
    assert not (work.root / "clusters").exists() and not (work.root / "secrets").exists()


def test_bad_stage_name_is_an_input_error(work: Workdir) -> None:
    run = work.cli("bootstrap", "--emulate", "--only", "nope")
    assert run.code == 2


@pytest.mark.skipif(os.environ.get("CLOUDCTL_SKIP_RACK_CLI") == "1", reason="opt-out")
def test_emulate_start_status_stop(work: Workdir) -> None:
    start = work.cli("emulate", "start")
    assert start.code == 0, start.stderr
    assert "started" in start.stdout
    again = work.cli("emulate", "start")
    assert "already running" in again.stdout
    st = work.cli("emulate", "status")
    assert st.code == 0 and json.loads(st.stdout)["bootstrap_rpcs"] == 0
    assert work.cli("emulate", "stop").stdout.strip() == "emulated rack stopped"
    assert work.cli("emulate", "status").code == 5


def test_an_idle_rack_sleeps_and_a_write_wakes_it(work: Workdir) -> None:
    """Once the cluster is up and nothing changes, the rack runs no reconcile pass and uses
    next to no CPU; a write through the Kubernetes API wakes it at once."""
    assert work.bootstrap().code == 0
    time.sleep(1.0)  # let the last transitions settle
    before = work.rack()
    pid = int(before["pid"])

    def cpu_ticks() -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    ticks = cpu_ticks()
    time.sleep(3.0)
    idle = work.rack()
    assert idle["passes"] == before["passes"], "the idle rack kept reconciling"
    used = cpu_ticks() - ticks
    assert used <= 0.03 * 3.0 * os.sysconf("SC_CLK_TCK"), f"{used} CPU ticks in 3 s idle"
    with _kube(work) as kube:
        apply_manifests(kube, [{"apiVersion": "v1", "kind": "ConfigMap",
                                "metadata": {"name": "wake-up", "namespace": "default"},
                                "data": {"k": "v"}}])
    woke = work.wait_rack(lambda r: r["passes"] > idle["passes"], timeout=2.0)
    assert woke["passes"] > idle["passes"], "a write did not wake the rack"
