"""Discover -> preflight -> apply -> bootstrap once -> kubeconfig against emulated racks of 3
control planes + 2 workers (inventory.example.yaml) and of 100 nodes, with the real rendered
machine configs, over real Ed25519 TLS on loopback."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudctl.emulate import Rack
from cloudctl.emulate.talos_hw import STANDARD_DISKS
from cloudctl.emulate.talos_scenario import ClusterMaterial, cluster_material, scaled_inventory
from cloudctl.errors import InputError, RemoteError
from cloudctl.inventory import load_inventory
from cloudctl.talos import ops

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory.example.yaml"


async def full_run(m: ClusterMaterial, rack: Rack, state_path: Path) -> dict[str, Any]:
    inv = m.inventory
    timings: dict[str, float] = {}
    t0 = t = time.perf_counter()
    found = await ops.discover(
        inv, (str(h) for h in inv.network.subnet.hosts()), dial=rack.endpoint
    )
    timings["discover"] = time.perf_counter() - t
    ops.check_preflight(inv, found)
    t = time.perf_counter()
    results = await ops.apply_all(
        inv, found, m.configs, m.credentials, dial=rack.endpoint, timeout=60
    )
    ops.raise_failures(results, "apply")
    timings["apply"] = time.perf_counter() - t
    t = time.perf_counter()
    # the same operation twice in a row and three times concurrently, with separate state
    # objects on the same persisted file (as separate pipeline runs would have)
    first = await ops.bootstrap_once(
        inv, m.credentials, ops.BootstrapState(state_path), dial=rack.endpoint, timeout=30
    )
    timings["bootstrap"] = time.perf_counter() - t
    timings["discover+apply+bootstrap"] = time.perf_counter() - t0
    again = await ops.bootstrap_once(
        inv, m.credentials, ops.BootstrapState(state_path), dial=rack.endpoint, timeout=30
    )
    concurrent = await asyncio.gather(
        *(
            ops.bootstrap_once(
                inv, m.credentials, ops.BootstrapState(state_path), dial=rack.endpoint, timeout=30
            )
            for _ in range(3)
        )
    )
    kubeconfig = await ops.kubeconfig(inv, m.credentials, dial=rack.endpoint)
    versions = ops.raise_failures(
        await ops.versions(inv, m.credentials, dial=rack.endpoint), "version"
    )
    # a resumed run: nothing answers an insecure probe any more (normal-mode apid wants a
    # client certificate); every node counts as applied because it answers over mTLS
    rediscovered = await ops.discover(inv, rack.dhcp_addresses(), dial=rack.endpoint)
    assert not rediscovered.nodes
    resumed = ops.raise_failures(
        await ops.apply_all(inv, rediscovered, m.configs, m.credentials, dial=rack.endpoint),
        "resumed apply",
    )
    assert {o.mode_details for o in resumed.values()} == {"already configured"}
    return {
        "first": first,
        "again": again,
        "concurrent": concurrent,
        "kubeconfig": kubeconfig,
        "versions": versions,
        "timings": timings,
        "found": found,
    }


def run_rack(m: ClusterMaterial, tmp_path: Path, **rack_args: Any) -> tuple[dict[str, Any], Rack]:
    async def body() -> tuple[dict[str, Any], Rack]:
        async with Rack(m.inventory, **rack_args) as rack:
            out = await full_run(m, rack, tmp_path / "bootstrap.json")
            assert all(n.stage == "running" for n in rack.nodes.values())
            return out, rack

    return asyncio.run(body())


def check(out: dict[str, Any], rack: Rack, m: ClusterMaterial) -> None:
    inv = m.inventory
    assert sorted(out["found"].nodes) == sorted(n.name for n in inv.nodes)
    assert out["first"].called and out["first"].node == "cp1"
    assert not out["again"].called and not any(c.called for c in out["concurrent"])
    cps = tuple(sorted(n.name for n in inv.controlplanes))
    assert out["first"].members == cps
    # exactly one Bootstrap call reached any node, on the first control plane
    assert {
        n.name: n.state.bootstrap_rpcs for n in rack.nodes.values() if n.state.bootstrap_rpcs
    } == {"cp1": 1}
    kc = yaml.safe_load(out["kubeconfig"])
    assert kc["clusters"][0]["cluster"]["server"] == inv.cluster.api_url
    assert set(out["versions"]) == {n.name for n in inv.nodes}
    assert {v.tag for v in out["versions"].values()} == {inv.cluster.talos_version}


def test_example_rack_three_control_planes_two_workers(tmp_path: Path) -> None:
    m = cluster_material(load_inventory(EXAMPLE).inventory)
    out, rack = run_rack(m, tmp_path)
    check(out, rack, m)
    # the bonded control plane listens on both of its configured addresses (bond + VLAN)
    assert set(rack.nodes["cp3"].state.addresses) == {"10.20.0.13", "10.100.0.13"}
    print("timings (5 nodes):", {k: round(v, 3) for k, v in out["timings"].items()})


@pytest.mark.slow
def test_hundred_nodes(tmp_path: Path) -> None:
    m = cluster_material(scaled_inventory(EXAMPLE, 100))
    assert len(m.inventory.nodes) == 100
    out, rack = run_rack(m, tmp_path)
    check(out, rack, m)
    timings = out["timings"]
    print("timings (100 nodes):", {k: round(v, 3) for k, v in timings.items()})
    # target 30 s (issue 4); the bound is looser so that a loaded CI machine does not flake
    assert timings["discover+apply+bootstrap"] < 60.0


def test_preflight_names_node_and_selector_that_does_not_resolve(tmp_path: Path) -> None:
    m = cluster_material(load_inventory(EXAMPLE).inventory)

    async def body() -> None:
        async with Rack(m.inventory, disks={"cp2": [STANDARD_DISKS[1]]}) as rack:
            found = await ops.discover(m.inventory, rack.dhcp_addresses(), dial=rack.endpoint)
            with pytest.raises(InputError) as exc:
                ops.check_preflight(m.inventory, found)
            msg = str(exc.value)
            assert "nodes[1].installDiskSelector" in msg
            assert (
                "node cp2: installDiskSelector {size='>= 100GB', type='ssd'} matches no disk" in msg
            )
            assert "cp1" not in msg

    asyncio.run(body())


def test_fan_out_reports_per_node_results(tmp_path: Path) -> None:
    """An unreachable node and one whose apply fails do not stop the others."""
    from cloudctl.emulate import Faults

    m = cluster_material(load_inventory(EXAMPLE).inventory)

    async def body() -> None:
        faults = {"worker2": Faults(apply_fails="injected: disk controller timeout")}
        async with Rack(m.inventory, faults=faults) as rack:
            found = await ops.discover(m.inventory, rack.dhcp_addresses(), dial=rack.endpoint)
            rack.nodes["worker1"].faults.unreachable = True
            await rack.power_cycle("worker1")
            results = {
                r.node: r
                for r in await ops.apply_all(
                    m.inventory, found, m.configs, m.credentials, dial=rack.endpoint, timeout=10
                )
            }
            assert {n for n, r in results.items() if r.ok} == {"cp1", "cp2", "cp3"}
            assert "worker1 (10.20.0.21)" in str(results["worker1"].error)
            assert "disk controller timeout" in str(results["worker2"].error)
            with pytest.raises(RemoteError) as exc:
                ops.raise_failures(list(results.values()), "apply")
            assert "2 of 5 node(s)" in str(exc.value)

    asyncio.run(body())


def test_bootstrap_once_across_event_loops(tmp_path: Path) -> None:
    """Two runs in separate event loops (as two processes would be) share only the state file;
    its flock makes exactly one of them call Bootstrap."""
    import threading

    m = cluster_material(load_inventory(EXAMPLE).inventory)
    loop = asyncio.new_event_loop()
    rack = Rack(m.inventory)

    async def prepare() -> None:
        await rack.start()
        found = await ops.discover(m.inventory, rack.dhcp_addresses(), dial=rack.endpoint)
        ops.raise_failures(
            await ops.apply_all(
                m.inventory, found, m.configs, m.credentials, dial=rack.endpoint, timeout=30
            ),
            "apply",
        )

    server = threading.Thread(target=loop.run_forever, daemon=True)
    server.start()
    try:
        asyncio.run_coroutine_threadsafe(prepare(), loop).result(60)
        outcomes: list[ops.BootstrapOutcome] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                outcomes.append(
                    asyncio.run(
                        ops.bootstrap_once(
                            m.inventory,
                            m.credentials,
                            ops.BootstrapState(tmp_path / "bootstrap.json"),
                            dial=rack.endpoint,
                            timeout=30,
                        )
                    )
                )
            except BaseException as exc:
                errors.append(exc)

        workers = [threading.Thread(target=run) for _ in range(3)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        assert not errors, errors
        assert sorted(o.called for o in outcomes) == [False, False, True]
        assert sum(n.state.bootstrap_rpcs for n in rack.nodes.values()) == 1
    finally:
        asyncio.run_coroutine_threadsafe(rack.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        server.join(10)
        loop.close()


def test_configs_go_out_while_earlier_nodes_install(tmp_path: Path) -> None:
    """With one send slot and installs that take a second, five nodes are configured in about
    one install's time, not five: a node's send does not wait for the nodes before it to come
    up (on a real rack an install takes minutes)."""
    m = cluster_material(load_inventory(EXAMPLE).inventory)
    inv = m.inventory

    async def body() -> float:
        async with Rack(inv, install_delay=1.0) as rack:
            found = await ops.discover(inv, (str(h) for h in inv.network.subnet.hosts()),
                                       dial=rack.endpoint)
            t = time.perf_counter()
            results = await ops.apply_all(inv, found, m.configs, m.credentials,
                                          dial=rack.endpoint, concurrency=1, timeout=60)
            elapsed = time.perf_counter() - t
            ops.raise_failures(results, "apply")
            assert all(n.stage == "running" for n in rack.nodes.values())
            return elapsed

    elapsed = asyncio.run(body())
    assert len(inv.nodes) == 5
    # three 1 s install steps per node (see talos_node): ~3 s for all, 15 s one after another
    assert elapsed < 9.0, f"{elapsed:.1f} s: sends waited for installs"
