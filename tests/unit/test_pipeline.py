"""Pipeline pieces without a rack: stage selection, state file, redacted events, the rendered
GitOps tree as apply sets, plan on a fresh cluster, the emulator's file:// Git reader."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from cloudctl.emulate.rack_gitops import head, read_objects
from cloudctl.errors import InputError, StateError
from cloudctl.inventory import load_inventory
from cloudctl.pipeline import (
    STAGES,
    Context,
    Event,
    Events,
    JsonLinesSink,
    NodePhase,
    Options,
    PipelineState,
    StageStatus,
    StateFile,
    plan_pipeline,
    select_stages,
)
from cloudctl.pipeline.platform import (
    flux_objects,
    kustomize_resources,
    platform_objects,
    tree_objects,
)
from cloudctl.render.gitops import local_chart_manifests, platform_releases, render_gitops

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory.example.yaml"
INV = load_inventory(EXAMPLE).inventory


def _ctx(tmp_path: Path, rack: str = "metal") -> Context:
    from cloudctl.rack import rack_for

    inv_path = tmp_path / "inventory.yaml"
    shutil.copy(EXAMPLE, inv_path)
    cluster_dir, secrets_dir = tmp_path / "clusters" / "rack1", tmp_path / "secrets" / "rack1"
    return Context(
        inventory=INV,
        inventory_path=inv_path,
        cluster_dir=cluster_dir,
        secrets_dir=secrets_dir,
        events=Events(),
        rack=rack_for(rack, INV, inventory_path=inv_path, cluster_dir=cluster_dir,
                      secrets_dir=secrets_dir),
        options=Options(),
    )


def test_stage_selection(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    assert select_stages(ctx) == list(STAGES)
    assert select_stages(ctx, resume=True) == list(STAGES)
    for name in ("preflight", "image", "boot"):
        ctx.state.stage(name).status = StageStatus.SKIPPED if name == "boot" else StageStatus.DONE
    ctx.state.stage("discover").status = StageStatus.RUNNING  # killed in the middle
    assert select_stages(ctx, resume=True)[0] == "discover"
    assert select_stages(ctx, only="flux") == ["flux"]
    assert select_stages(ctx, from_stage="platform") == ["platform", "hooks-after-platform",
                                                         "tenants", "done"]
    with pytest.raises(InputError) as exc:
        select_stages(ctx, only="nope")
    assert "--only 'nope'" in str(exc.value)
    ctx.state.stage("discover").status = StageStatus.INTERRUPTED
    assert select_stages(ctx, resume=True)[0] == "discover"
    for name in STAGES:
        ctx.state.stage(name).status = StageStatus.DONE
    assert select_stages(ctx, resume=True) == []


def test_state_file_round_trip_and_cluster_check(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "state.json", "rack1")
    assert sf.load().first_unfinished() == "preflight"
    st = PipelineState(cluster="rack1")
    st.stage("preflight").status = StageStatus.DONE
    st.node("cp1").phase = NodePhase.APPLIED
    st.releases["cilium"] = {"state": "ready"}
    sf.save(st)
    again = sf.load()
    assert again.stage("preflight").status == "done"
    assert again.node("cp1").phase == "applied"
    assert again.first_unfinished() == "image"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp files left
    with pytest.raises(StateError, match="belongs to cluster 'rack1'") as err:
        StateFile(tmp_path / "state.json", "other").load()
    assert err.value.exit_code == 9
    for bad in ("{not json", "[]", '{"version": 7, "cluster": "rack1"}',
                '{"version": 2, "cluster": "rack1", "stages": {"preflight": {"status": "x"}}}',
                '{"version": 2, "cluster": "rack1", "stages": {"nope": {}}}',
                '{"version": 2, "cluster": "rack1", "nodes": {"cp1": {"phase": 3, "z": 1}}}'):
        (tmp_path / "state.json").write_text(bad)
        with pytest.raises(StateError, match=r"state\.json: corrupt state file") as err:
            sf.load()
        assert err.value.exit_code == 9, bad


def test_state_version_1_is_read_and_its_bootstrap_copy_dropped(tmp_path: Path) -> None:
    """Version 1 kept "bootstrapped" in state.json too; bootstrap.json is now its one record."""
    (tmp_path / "state.json").write_text(json.dumps({
        "version": 1, "cluster": "rack1", "bootstrapped": True, "bootstrap_node": "cp1",
        "stages": {"bootstrap": {"status": "done"}}, "nodes": {"cp1": {"phase": "ready"}}}))
    st = StateFile(tmp_path / "state.json", "rack1").load()
    assert st.stage("bootstrap").status is StageStatus.DONE
    assert st.node("cp1").phase is NodePhase.READY
    assert "bootstrapped" not in st.to_json() and '"version": 2' in st.to_json()


def test_events_are_redacted_before_any_sink() -> None:
    out = io.StringIO()
    events = Events([JsonLinesSink(out)])
    secret = "c2VjcmV0LWtleS1tYXRlcmlhbC0xMjM0NTY="
    events.set_secrets([secret])
    events("apply", "stage-failed", f"node said {secret}", node="cp1", error=f"x{secret}y")
    line = json.loads(out.getvalue())
    assert secret not in out.getvalue()
    assert line["message"] == "node said [REDACTED]" and line["error"] == "x[REDACTED]y"
    assert line["ts"] > 0 and line["node"] == "cp1"
    assert events.history[0] == Event(**line)


def test_rendered_tree_as_apply_sets() -> None:
    files = render_gitops(INV)
    assert kustomize_resources(files, "gitops") == ["flux-system", "platform", "local"]
    flux = flux_objects(files)
    kinds = {o["kind"] for o in flux}
    assert {"CustomResourceDefinition", "Deployment", "Namespace"} <= kinds
    assert all(o["metadata"]["name"] != "cloudctl-platform" for o in flux)
    everything = tree_objects(files, "gitops")
    assert len(everything) > len(flux)
    direct = platform_objects(INV, files, direct=True)
    releases = [o["metadata"]["name"] for o in direct if o["kind"] == "HelmRelease"]
    local = set(local_chart_manifests(INV))
    assert local == {"kubevirt-operator", "kubevirt", "cdi-operator", "cdi", "metallb-config",
                     "capi-providers"}
    assert releases == [r.name for r in platform_releases(INV) if r.name not in local]
    assert direct[0]["kind"] == "Namespace"
    # direct mode: the local charts are plain manifests in gitops/local/, no HelmRelease
    assert {o["metadata"]["name"] for o in platform_objects(INV, files, direct=False)
            if o["kind"] == "HelmRelease"} == set(releases)


def test_plan_on_a_fresh_cluster(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, rack="emulated")
    steps = asyncio.run(plan_pipeline(ctx))
    skipped = {(s.stage, s.target) for s in steps if s.action == "skip"}
    assert skipped == {("boot", None), ("image", "assets"), ("hooks-before-boot", None),
                       ("hooks-after-bootstrap", None), ("hooks-after-platform", None)}
    assert {s.reason for s in steps if s.stage.startswith("hooks-")} == {"no hooks"}
    assert [s.target for s in steps if s.stage == "apply"] == [n.name for n in INV.nodes]
    assert any("live state unknown" in s.reason for s in steps if s.stage == "discover")
    assert steps[-1].stage == "done" and steps[-1].action == "run"
    assert steps[0].line().startswith("run   preflight  validate versions, secrets missing")
    assert "host: none: the emulated rack" in steps[0].reason
    assert not ctx.cluster_dir.exists()
    metal = asyncio.run(plan_pipeline(_ctx(tmp_path)))
    boot = [s for s in metal if s.stage == "boot"]
    assert [s.target for s in boot] == [n.name for n in INV.nodes]
    assert all(s.action == "run" and "DHCP, TFTP and HTTP on eno1" in s.reason for s in boot)


def test_file_git_reader_follows_kustomization_resources(tmp_path: Path) -> None:
    bare = tmp_path / "repo.git"
    work = tmp_path / "work"
    env = ["-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    d = work / "clusters" / "c1"
    (d / "sub").mkdir(parents=True)
    (d / "kustomization.yaml").write_text("resources: [a.yaml, sub]\n")
    (d / "a.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n"
                              "apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n")
    (d / "sub" / "kustomization.yaml").write_text("resources: [c.yaml]\n")
    (d / "sub" / "c.yaml").write_text("apiVersion: v1\nkind: ConfigMap\n"
                                      "metadata: {name: c, namespace: a}\n")
    for cmd in (["add", "-A"], ["commit", "-q", "-m", "x"],
                ["push", "-q", str(bare), "HEAD:refs/heads/main"]):
        subprocess.run(["git", *env, "-C", str(work), *cmd], check=True)
    rev = head(str(bare), "main")
    assert rev and len(rev) == 40
    assert head(str(bare), "nope") is None
    objs = read_objects(str(bare), rev, "./clusters/c1")
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == [
        ("Namespace", "a"), ("Namespace", "b"), ("ConfigMap", "c")]


def test_etcd_views_read_during_a_join_are_not_split_brain() -> None:
    """The bootstrap stage polls every control plane's member list while members join: a
    stale view that shares members with a newer one is the same cluster (seen at 100 nodes:
    cp1 {1001} vs cp3 {1001, 1002, 1003}); disjoint views are two clusters."""
    from cloudctl.talos.client import EtcdMember
    from cloudctl.talos.ops import etcd_views_problem

    a, b, c = (EtcdMember(i, f"cp{i}", (), (), False) for i in (1, 2, 3))
    assert etcd_views_problem({"cp1": [a], "cp2": None, "cp3": [a, b, c]}) is None
    assert etcd_views_problem({"cp1": [a, b], "cp2": [b, c], "cp3": [c]}) is None
    msg = etcd_views_problem({"cp1": [a], "cp2": [b, c], "cp3": [c]})
    assert msg is not None and "cp1 see members {1}" in msg and "cp2, cp3 see" in msg


def test_host_network_checks_name_the_inventory_field(tmp_path: Path) -> None:
    import ipaddress
    import socket

    from cloudctl.rack.metal import host_network_problems

    if "eno1" not in {n for _, n in socket.if_nameindex()}:
        problems = host_network_problems("eno1", str(INV.network.boot_server))
        assert [p.path for p in problems] == ["network.interface"]
        assert "'eno1' does not exist on this host" in problems[0].message
    # loopback exists and carries 127.0.0.1 but not the inventory's boot server
    problems = host_network_problems("lo", str(INV.network.boot_server))
    assert [p.path for p in problems] == ["network.bootServer"]
    assert "127.0.0.1" in problems[0].message
    assert host_network_problems("lo", str(ipaddress.IPv4Address("127.0.0.1"))) == []


def test_stale_bootstrap_marker_decision() -> None:
    """The marker says bootstrapped, no control plane has a member: stale once the
    bootstrapped node rebooted since the call or the call is past the grace period; right after
    the call (same boot) etcd may still be starting."""
    from cloudctl.talos.client import EtcdMember
    from cloudctl.talos.ops import STALE_MARKER_GRACE, stale_marker_problem

    path = Path("/c/bootstrap.json")
    empty: dict[str, list[EtcdMember] | None] = {"cp1": None, "cp2": None}
    marker = {"bootstrapped": "cp1", "boot_id": "b1", "at_unix": 1000.0}
    assert stale_marker_problem(path, {}, empty, None, 1001) is None  # no marker
    assert stale_marker_problem(path, marker, empty, "b1", 1001) is None  # etcd starting
    member = EtcdMember(1, "cp1", (), (), False)
    assert stale_marker_problem(path, marker, {"cp1": [member], "cp2": None}, "b2",
                                1e9) is None  # members exist: not stale
    rebooted = stale_marker_problem(path, marker, empty, "b2", 1001)
    assert rebooted is not None and "rebooted since" in rebooted
    assert rebooted.startswith("/c/bootstrap.json records etcd bootstrapped on cp1")
    assert "move /c/bootstrap.json aside" in rebooted
    old = stale_marker_problem(path, marker, empty, "b1", 1000 + STALE_MARKER_GRACE + 1)
    assert old is not None and "long ago" in old
    legacy = {"bootstrapped": "cp1"}  # a marker written before boot IDs were recorded
    assert stale_marker_problem(path, legacy, empty, None, 0) is not None


def test_new_rack_resets_the_machines_state(tmp_path: Path) -> None:
    """An emulated rack that restarted is a new set of machines: node states and the
    Talos-side stages are forgotten, the marker and kubeconfig kept as *.old."""
    from cloudctl.pipeline.runner import new_rack_reset

    ctx = _ctx(tmp_path, rack="emulated")

    class Restarted(type(ctx.rack)):  # type: ignore[misc]
        def identity(self) -> str | None:
            return "emulated pid 2 (start 9)"

    ctx.rack = Restarted(INV, ctx.cluster_dir, inventory_path=ctx.inventory_path,
                         secrets_dir=ctx.secrets_dir)
    ctx.cluster_dir.mkdir(parents=True)
    ctx.state.rack = "emulated pid 1 (start 5)"
    for name in STAGES:
        ctx.state.stage(name).status = StageStatus.DONE
    ctx.state.node("cp1").phase = NodePhase.READY
    ctx.bootstrap_path.write_text('{"bootstrapped": "cp1"}')
    note = new_rack_reset(ctx)
    assert note is not None and "new cluster" in note and "bootstrap.json" in note
    assert ctx.state.node("cp1").phase is NodePhase.PENDING
    assert ctx.state.first_unfinished() == "discover"
    assert (ctx.cluster_dir / "bootstrap.json.old").is_file() and not ctx.bootstrap_path.exists()
    assert new_rack_reset(ctx) is None  # same rack now: nothing to do
