"""The Talos node emulator answers like Talos: validation, life cycle, bootstrap guard, split
brain, kubeconfig stream, upgrade (and injected rollback), faults."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from grpclib.const import Status

from cloudctl.emulate import Faults, Rack
from cloudctl.emulate.talos_hw import STANDARD_DISKS
from cloudctl.emulate.talos_scenario import ClusterMaterial, cluster_material
from cloudctl.errors import InputError, RemoteError, Timeout
from cloudctl.inventory import load_inventory
from cloudctl.talos import ops
from cloudctl.talos.client import NO_RETRY, TalosApiError, TalosClient, TalosTimeout
from cloudctl.talos.proto import machine_pb2

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory.example.yaml"
T = TypeVar("T")


@pytest.fixture(scope="module")
def material() -> ClusterMaterial:
    return cluster_material(load_inventory(EXAMPLE).inventory)


def with_rack(
    material: ClusterMaterial, body: Callable[[Rack], Awaitable[T]], **rack_args: Any
) -> T:
    async def run() -> T:
        async with Rack(material.inventory, **rack_args) as rack:
            return await body(rack)

    return asyncio.run(run())


async def apply_raw(rack: Rack, address: str, config: bytes, **kw: Any) -> None:
    async with TalosClient(rack.endpoint(address), read_retry=NO_RETRY) as c:
        await c.apply_configuration(config, **kw)


async def install(rack: Rack, m: ClusterMaterial, *names: str) -> None:
    for name in names:
        ip = str(m.inventory.node(name).ip)
        await apply_raw(rack, ip, m.configs[name])
    for name in names:
        await ops.wait_running(
            rack.endpoint(str(m.inventory.node(name).ip)), m.credentials, timeout=10
        )


def _error(exc: pytest.ExceptionInfo[TalosApiError]) -> tuple[Status, str]:
    return exc.value.code, exc.value.detail


def test_apply_validates_against_the_talos_schema(material: ClusterMaterial) -> None:
    bad = material.configs["cp1"].replace(b"machine:\n", b"machine:\n  bogusKey: 1\n", 1)
    invalid_yaml = b"version: v1alpha1\nmachine: [\n"
    no_v1 = b"apiVersion: v1alpha1\nkind: HostnameConfig\nauto: stable\n"

    async def body(rack: Rack) -> None:
        for cfg, needle in ((bad, "bogusKey"), (invalid_yaml, ""), (no_v1, "v1alpha1")):
            with pytest.raises(TalosApiError) as exc:
                await apply_raw(rack, "10.20.0.11", cfg)
            code, detail = _error(exc)
            assert code == Status.INVALID_ARGUMENT and needle in detail
            assert "10.20.0.11" in str(exc.value)
        assert rack.nodes["cp1"].stage == "maintenance"
        with pytest.raises(TalosApiError) as exc:
            await apply_raw(
                rack,
                "10.20.0.11",
                material.configs["cp1"],
                mode=machine_pb2.ApplyConfigurationRequest.STAGED,
            )
        assert _error(exc)[0] == Status.UNIMPLEMENTED
        assert "not supported in maintenance mode" in _error(exc)[1]

    with_rack(material, body)


def test_worker_config_with_os_ca_key_is_refused(material: ClusterMaterial) -> None:
    cp = yaml.safe_load(material.configs["cp1"].split(b"\n---\n")[0])
    worker_docs = material.configs["worker1"].split(b"\n---\n")
    w = yaml.safe_load(worker_docs[0])
    w["machine"]["ca"] = cp["machine"]["ca"]
    cfg = b"\n---\n".join([yaml.safe_dump(w).encode(), *worker_docs[1:]])

    async def body(rack: Rack) -> None:
        with pytest.raises(TalosApiError, match="issuing Talos API CA key is not allowed"):
            await apply_raw(rack, "10.20.0.21", cfg)

    with_rack(material, body)


def test_life_cycle_maintenance_installed_running(material: ClusterMaterial) -> None:
    async def body(rack: Rack) -> list[str]:
        node = rack.nodes["cp2"]
        assert node.stage == "maintenance"
        await install(rack, material, "cp2")
        assert node.stage == "running"
        async with TalosClient(rack.endpoint("10.20.0.12"), material.credentials) as c:
            types = await c.get("config", "MachineTypes.config.talos.dev", "machine-type")
            addrs = await c.list("network", "AddressStatuses.net.talos.dev")
        assert types.spec == "controlplane"
        assert {r.spec["address"] for r in addrs} == {"10.20.0.12/24"}
        return node.state.history

    history = with_rack(material, body)
    assert history[0] == "installed on /dev/sda" and history[-1].startswith("up running")


def test_install_disk_that_does_not_resolve_returns_to_maintenance(
    material: ClusterMaterial,
) -> None:
    async def body(rack: Rack) -> dict[str, Any]:
        await apply_raw(rack, "10.20.0.12", material.configs["cp2"])  # wants an SSD >= 100GB
        for _ in range(100):
            await asyncio.sleep(0.02)
            if rack.nodes["cp2"].state.last_error:
                break
        async with TalosClient(rack.endpoint("10.20.0.12")) as c:
            res = await c.get("runtime", "MachineStatuses.runtime.talos.dev", "machine")
        return res.spec  # type: ignore[no-any-return]

    spec = with_rack(material, body, disks={"cp2": [STANDARD_DISKS[1]]})
    assert spec["stage"] == "maintenance"
    assert "no disk matches" in spec["status"]["unmetConditions"][0]["reason"]


def test_config_selecting_another_nodes_mac(material: ClusterMaterial) -> None:
    """Talos accepts it; the link selector matches nothing, the node never gets its address."""

    async def body(rack: Rack) -> None:
        d = await ops.discover(material.inventory, ["10.20.0.11"], dial=rack.endpoint)
        with pytest.raises(InputError, match="52:54:00:10:00:12"):
            await ops.apply_node(
                material.inventory.node("cp1"),
                d.nodes["cp1"],
                material.configs["cp2"],
                material.credentials,
                dial=rack.endpoint,
                timeout=1,
            )
        await apply_raw(rack, "10.20.0.11", material.configs["cp2"])  # bypassing the guard
        with pytest.raises(Timeout, match="not running in normal mode"):
            await ops.wait_running(rack.endpoint("10.20.0.12"), material.credentials, timeout=0.5)
        assert "52:54:00:10:00:12 not present" in rack.nodes["cp1"].state.last_error

    with_rack(material, body)


def test_bootstrap_guard_and_kubeconfig(material: ClusterMaterial) -> None:
    async def body(rack: Rack) -> bytes:
        async with TalosClient(rack.endpoint("10.20.0.11")) as c:  # maintenance, insecure
            with pytest.raises(TalosApiError) as exc:
                await c.bootstrap()
            assert _error(exc)[0] == Status.PERMISSION_DENIED
        await install(rack, material, "cp1", "worker1")
        async with TalosClient(rack.endpoint("10.20.0.21"), material.credentials) as c:
            with pytest.raises(TalosApiError) as exc:
                await c.bootstrap()
            assert _error(exc) == (
                Status.UNIMPLEMENTED,
                "bootstrap is only available on control plane nodes",
            )
        async with TalosClient(rack.endpoint("10.20.0.11"), material.credentials) as c:
            await c.bootstrap()
            with pytest.raises(TalosApiError) as exc:
                await c.bootstrap()
            assert _error(exc) == (Status.ALREADY_EXISTS, "etcd data directory is not empty")
            assert [m.hostname for m in await c.etcd_members()] == ["cp1"]
            return await c.kubeconfig()

    kc = yaml.safe_load(with_rack(material, body, kube_api_url="https://127.0.0.1:16443"))
    assert kc["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:16443"
    ca = base64.b64decode(kc["clusters"][0]["cluster"]["certificate-authority-data"])
    assert ca == material.bundle.k8s.crt
    assert kc["current-context"] == "admin@rack1"


def test_split_brain_is_detected(material: ClusterMaterial) -> None:
    """Two control planes bootstrapped separately form two etcd clusters; ops refuses."""

    async def body(rack: Rack, tmp: Path) -> None:
        await install(rack, material, "cp1", "cp2", "cp3")
        for ip in ("10.20.0.11", "10.20.0.12"):
            async with TalosClient(rack.endpoint(ip), material.credentials) as c:
                await c.bootstrap()
        views = await ops.etcd_views(material.inventory, material.credentials, dial=rack.endpoint)
        assert ops.etcd_views_problem(views) is not None
        with pytest.raises(RemoteError, match="split brain"):
            await ops.bootstrap_once(
                material.inventory,
                material.credentials,
                ops.BootstrapState(tmp / "state.json"),
                dial=rack.endpoint,
            )

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        with_rack(material, lambda r: body(r, Path(tmp)), etcd_join_delay=60)


def test_upgrade_and_injected_rollback(material: ClusterMaterial) -> None:
    image = "factory.talos.dev/metal-installer/abc:v1.13.10"
    inv = material.inventory

    async def body(rack: Rack) -> None:
        await install(rack, material, "cp1", "worker1")
        got = await ops.upgrade_node(
            inv.node("cp1"), material.credentials, image, dial=rack.endpoint, timeout=10
        )
        assert got.tag == "v1.13.10"
        with pytest.raises(RemoteError, match=r"worker1: upgrade to v1\.13\.10 rolled back"):
            await ops.upgrade_node(
                inv.node("worker1"), material.credentials, image, dial=rack.endpoint, timeout=10
            )
        again = await ops.reboot_node(
            inv.node("cp1"), material.credentials, dial=rack.endpoint, timeout=10
        )
        assert again.tag == "v1.13.10"

    with_rack(material, body, faults={"worker1": Faults(upgrade_rollback=True)})


def test_faults_unreachable_slow_apply_fails(material: ClusterMaterial) -> None:
    faults = {
        "cp1": Faults(unreachable=True),
        "cp2": Faults(slow=1.0),
        "cp3": Faults(apply_fails="disk on fire"),
    }

    async def body(rack: Rack) -> None:
        async with TalosClient(rack.endpoint("10.20.0.11")) as c:
            with pytest.raises(TalosApiError) as exc:
                await c.version()
            assert _error(exc) == (Status.UNAVAILABLE, "connection refused")
        async with TalosClient(rack.endpoint("10.20.0.12"), timeout=0.2) as c:
            with pytest.raises(TalosTimeout, match=r"10\.20\.0\.12: Version: no answer within"):
                await c.version()
        with pytest.raises(TalosApiError) as exc:
            await apply_raw(rack, "10.20.0.13", material.configs["cp3"])
        assert _error(exc) == (Status.INTERNAL, "disk on fire")

    with_rack(material, body, faults=faults)


def test_maintenance_version_per_talos_release(material: ClusterMaterial) -> None:
    """Talos <= 1.12 maintenance mode refuses Version to insecure clients; 1.13 apid serves it."""

    async def body(rack: Rack) -> None:
        async with TalosClient(rack.endpoint("10.20.0.11")) as c:
            with pytest.raises(TalosApiError) as exc:
                await c.version()
            assert _error(exc) == (
                Status.UNIMPLEMENTED,
                "API is not implemented in maintenance mode",
            )
            assert await c.machine_stage() == "maintenance"
        async with TalosClient(rack.endpoint("10.20.0.12")) as c:
            assert (await c.version()).tag == "v1.13.6"

    with_rack(material, body, talos_versions={"cp1": "v1.12.11"})


def test_layer2_vip_follows_etcd_membership(material: ClusterMaterial) -> None:
    """The VIP answers once etcd runs, on one control plane, and moves when its holder reboots."""
    inv = material.inventory
    vip = str(inv.cluster.vip)

    async def body(rack: Rack) -> tuple[str | None, str | None]:
        await install(rack, material, "cp1", "cp2", "cp3")
        assert rack.vip_holder(vip) is None  # no etcd yet: nobody holds the VIP
        await ops.bootstrap_once(
            inv,
            material.credentials,
            ops.BootstrapState(rack.workdir / "bootstrap.json"),
            dial=rack.endpoint,
            timeout=10,
        )
        for _ in range(50):
            if rack.vip_holder(vip):
                break
            await asyncio.sleep(0.02)
        first = rack.vip_holder(vip)
        async with TalosClient(rack.endpoint(vip), material.credentials) as c:
            assert (await c.version()).tag == inv.cluster.talos_version
        assert first is not None
        await ops.reboot_node(inv.node(first), material.credentials, dial=rack.endpoint, timeout=10)
        async with TalosClient(rack.endpoint(vip), material.credentials) as c:
            assert await c.machine_stage() == "running"
        return first, rack.vip_holder(vip)

    first, after = with_rack(material, body)
    assert first == "cp1" and after in ("cp2", "cp3")


def test_discovery_retries_slow_machines_with_longer_deadlines(material: ClusterMaterial) -> None:
    inv = material.inventory

    async def body(rack: Rack) -> None:
        addrs = rack.dhcp_addresses()
        once = await ops.discover(inv, addrs, dial=rack.endpoint, timeout=0.2, rounds=1)
        assert "cp2" not in once.nodes and once.unresponsive == ["10.20.0.12"]
        problems = [str(p) for p in ops.preflight(inv, once)]
        assert any("cp2" in p and "did not answer in time: 10.20.0.12" in p for p in problems)
        again = await ops.discover(inv, addrs, dial=rack.endpoint, timeout=0.2, rounds=2)
        assert sorted(again.nodes) == sorted(n.name for n in inv.nodes)
        assert again.unresponsive == []

    with_rack(material, body, faults={"cp2": Faults(slow=0.3)})


def test_retries_only_on_the_codes_talosctl_retries(material: ClusterMaterial) -> None:
    from cloudctl.talos.client import BOOTSTRAP_RETRY, RetryPolicy

    policy = RetryPolicy(BOOTSTRAP_RETRY.codes, attempts=3, delay=0.01)

    async def body(rack: Rack) -> None:
        node = rack.nodes["cp1"]
        async with TalosClient(rack.endpoint("10.20.0.11")) as c:  # PermissionDenied: no retry
            with pytest.raises(TalosApiError):
                await c.bootstrap(retry=policy)
        assert node.state.bootstrap_rpcs == 1
        await install(rack, material, "cp1")
        node.state.stage = "booting"  # FailedPrecondition "bootstrap is not available yet"
        async with TalosClient(rack.endpoint("10.20.0.11"), material.credentials) as c:
            with pytest.raises(TalosApiError) as exc:
                await c.bootstrap(retry=policy)
            assert _error(exc) == (Status.FAILED_PRECONDITION, "bootstrap is not available yet")
            assert node.state.bootstrap_rpcs == 1 + 3
            node.state.stage = "running"
            await c.bootstrap(retry=policy)
            with pytest.raises(TalosApiError):  # AlreadyExists: returned at once
                await c.bootstrap(retry=policy)
        assert node.state.bootstrap_rpcs == 1 + 3 + 2

    with_rack(material, body)
