"""Pure parts of the Talos layer: disk selection, MAC matching, preflight, split-brain detection,
redaction, bootstrap state file, kubeconfig archive extraction."""

from __future__ import annotations

import asyncio
import gzip
import io
import stat
import tarfile
from pathlib import Path

import pytest

from cloudctl.emulate.talos_hw import STANDARD_DISKS, default_disks
from cloudctl.inventory import load_inventory
from cloudctl.inventory.models import DiskSelector, Inventory
from cloudctl.talos.client import DiskInfo, EtcdMember, extract_kubeconfig, spki_sha256
from cloudctl.talos.disks import parse_size_condition, resolve_install_disk, selector_matches
from cloudctl.talos.ops import (
    BootstrapState,
    DiscoveredNode,
    bootstrap_node,
    etcd_views_problem,
    foreign_macs,
    match_inventory,
    preflight,
    redact_text,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory.example.yaml"


@pytest.fixture(scope="module")
def inv() -> Inventory:
    return load_inventory(EXAMPLE).inventory


def test_size_conditions_use_go_humanize_units() -> None:
    assert parse_size_condition(">= 100GB") == (">=", 100 * 1000**3)
    assert parse_size_condition("480GiB") == ("==", 480 * 1024**3)
    assert parse_size_condition("<2TB") == ("<", 2 * 1000**4)
    with pytest.raises(ValueError):
        parse_size_condition("big")


def test_selector_fields_all_must_match() -> None:
    ssd, hdd, nvme = STANDARD_DISKS
    assert selector_matches(DiskSelector(type="ssd", size=">= 100GB"), ssd)
    assert not selector_matches(DiskSelector(type="ssd", size=">= 1TB"), ssd)
    assert selector_matches(DiskSelector(model="SAMSUNG MZ7*"), ssd)
    assert not selector_matches(DiskSelector(model="SAMSUNG MZ7*"), nvme)
    assert selector_matches(DiskSelector(type="nvme"), nvme)
    assert selector_matches(DiskSelector(bus_path="/pci0000:00/0000:00:17.0/*"), hdd)
    ro = DiskInfo("/dev/sdz", 500 * 1000**3, type="SSD", readonly=True)
    assert not selector_matches(DiskSelector(type="ssd"), ro)


def test_example_inventory_resolves_on_default_disks(inv: Inventory) -> None:
    chosen = {n.name: resolve_install_disk(n, default_disks(n)) for n in inv.nodes}
    assert {k: v.disk.device_name for k, v in chosen.items() if v.disk} == {
        "cp1": "/dev/sda",
        "cp2": "/dev/sda",
        "cp3": "/dev/nvme0n1",
        "worker1": "/dev/sda",
        "worker2": "/dev/sda",
    }


def _found(inv: Inventory, disks: dict[str, list[DiskInfo]] | None = None) -> list[DiscoveredNode]:
    disks = disks or {}
    return [
        DiscoveredNode(
            str(n.ip),
            "maintenance",
            tuple((f"eth{i}", m) for i, m in enumerate(n.macs)),
            tuple(disks.get(n.name, default_disks(n))),
        )
        for n in inv.nodes
    ]


def test_match_by_mac_and_preflight_clean(inv: Inventory) -> None:
    found = _found(inv)
    found.append(DiscoveredNode("10.20.0.99", "maintenance", (("eth0", "52:54:00:ff:ff:ff"),)))
    found.append(DiscoveredNode("10.20.0.98", "running"))
    d = match_inventory(inv, found)
    assert sorted(d.nodes) == sorted(n.name for n in inv.nodes)
    assert [u.address for u in d.unknown] == ["10.20.0.99"]
    assert [c.address for c in d.configured] == ["10.20.0.98"]
    assert preflight(inv, d) == []


def test_preflight_names_node_and_selector(inv: Inventory) -> None:
    hdd_only = [STANDARD_DISKS[1]]
    d = match_inventory(inv, _found(inv, {"cp2": hdd_only, "cp1": hdd_only}))
    problems = preflight(inv, d)
    text = [str(p) for p in problems]
    assert len(problems) == 2, text
    cp2 = next(p for p in problems if "cp2" in p.message)
    assert cp2.path == "nodes[1].installDiskSelector"
    assert "installDiskSelector {size='>= 100GB', type='ssd'} matches no disk" in cp2.message
    cp1 = next(p for p in problems if "cp1" in p.message)
    assert cp1.path == "nodes[0].installDisk" and "/dev/sda not found" in cp1.message


def test_preflight_reports_missing_nodes_and_nics(inv: Inventory) -> None:
    found = [f for f in _found(inv) if f.address != "10.20.0.21"]
    cp3 = next(f for f in found if f.address == "10.20.0.13")
    found[found.index(cp3)] = DiscoveredNode(cp3.address, cp3.stage, cp3.links[:1], cp3.disks)
    problems = [str(p) for p in preflight(inv, match_inventory(inv, found))]
    assert any("worker1" in p and "not found in maintenance mode" in p for p in problems)
    assert any("cp3: NIC 52:54:00:10:01:13 not present" in p for p in problems)


def test_two_machines_for_one_node_is_a_problem(inv: Inventory) -> None:
    found = _found(inv)
    found.append(DiscoveredNode("10.20.0.200", "maintenance", (("eth0", inv.nodes[0].macs[0]),)))
    problems = match_inventory(inv, found).problems
    assert len(problems) == 1 and "two machines answer for node cp1" in problems[0].message


def test_bootstrap_node_is_first_control_plane_by_address(inv: Inventory) -> None:
    assert bootstrap_node(inv).name == "cp1"


def test_split_brain_detection() -> None:
    a = EtcdMember(1, "cp1", (), (), False)
    b = EtcdMember(2, "cp2", (), (), False)
    assert etcd_views_problem({"cp1": [a, b], "cp2": [a, b], "cp3": None}) is None
    msg = etcd_views_problem({"cp1": [a], "cp2": [b], "cp3": None})
    assert msg is not None and "split brain" in msg and "cp1" in msg and "cp2" in msg


def test_foreign_macs_and_redaction() -> None:
    cfg = b'selector:\n  match: mac(link.permanent_addr) == "52:54:00:10:00:12"\n'
    assert foreign_macs(cfg, ["52:54:00:10:00:11"]) == ["52:54:00:10:00:12"]
    assert foreign_macs(cfg, ["52:54:00:10:00:12"]) == []
    diff = "+  token: abcdef.0123456789abcdef\n   key: LS0tLS1\n-  secret: xyz\n  crt: LS0tPUB\n"
    red = redact_text(diff)
    assert "abcdef.0123456789abcdef" not in red and "LS0tLS1" not in red and "xyz" not in red
    assert "crt: LS0tPUB" in red


def test_bootstrap_state_file_is_private_and_atomic(tmp_path: Path) -> None:
    st = BootstrapState(tmp_path / "state" / "bootstrap.json")

    async def run() -> None:
        async with st.locked():
            st.write({"bootstrapped": "cp1"})

    asyncio.run(run())
    assert st.bootstrapped_node == "cp1"
    assert stat.S_IMODE(st.path.stat().st_mode) == 0o600
    assert BootstrapState(tmp_path / "none.json").read() == {}


def test_kubeconfig_archive_extraction() -> None:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        info = tarfile.TarInfo("kubeconfig")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    assert extract_kubeconfig(buf.getvalue()) == b"hello"
    with pytest.raises(ValueError, match=r"not a tar\.gz"):
        extract_kubeconfig(b"nope")


def test_spki_pin_is_sha256_of_subject_public_key_info() -> None:
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from cloudctl.secrets.pki import new_ca, new_ed25519

    ca = new_ca(new_ed25519(), organization="x")
    cert = x509.load_pem_x509_certificate(ca.crt)
    der = cert.public_bytes(serialization.Encoding.DER)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert spki_sha256(der) == hashlib.sha256(spki).hexdigest()


def test_fan_out_failures_keep_each_nodes_error_type() -> None:
    """An input error on one node (a config naming a foreign MAC) and a remote error on another:
    the aggregate is an InputError (exit 2: fix the input first) listing both nodes; failures
    of one type keep that type (a timeout stays exit 7)."""
    from cloudctl.errors import InputError, Problem, RemoteError, Timeout
    from cloudctl.talos.ops import NodeResult, raise_failures

    results = [
        NodeResult("cp1", value=1),
        NodeResult("cp2", error=RemoteError("Talos node cp2: apply refused")),
        NodeResult("w1", error=InputError(Problem("nodes.w1", "config names foreign MAC"))),
    ]
    with pytest.raises(InputError) as exc:
        raise_failures(results, "apply")
    err = exc.value
    assert err.exit_code == 2 and isinstance(err, InputError)
    assert "apply failed on 2 of 3 node(s)" in str(err)
    assert "cp2: Talos node cp2: apply refused" in str(err) and "foreign MAC" in str(err)
    assert [p.path for p in err.problems] == ["nodes.w1"]
    with pytest.raises(Timeout) as slow:
        raise_failures([NodeResult("cp1", error=Timeout("no answer"))], "version")
    assert slow.value.exit_code == 7
    with pytest.raises(RemoteError) as remote:
        raise_failures([NodeResult("cp1", error=RemoteError("x"))], "version")
    assert remote.value.exit_code == 6
