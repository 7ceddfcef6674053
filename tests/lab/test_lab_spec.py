"""The lab as pure data (no root): names, UUIDs, MACs, disks, firmware, domain XML; power
target selection and secret references; Redfish errors against a closed loopback port."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from netns import with_catalog_versions

from cloudctl.errors import InputError, RemoteError, SecretsError
from cloudctl.inventory import parse_inventory
from cloudctl.lab.spec import OVMF_CODE, OVMF_VARS, domain_xml, lab_spec, resolve_accel
from cloudctl.power import run_power
from cloudctl.power.ops import select
from cloudctl.power.secret import resolve_password

BASE = """
cluster: {name: demo, talosVersion: TALOS_VERSION, kubernetesVersion: K8S_VERSION,
          vip: 10.20.0.10}
network: {interface: eth0, bootServer: 10.20.0.2, subnet: 10.20.0.0/24, gateway: 10.20.0.1}
platform: {metallb: {enabled: false}}
LAB
nodes:
  - name: a
    role: controlplane
    macs: ["52:54:00:10:00:31"]
    ip: 10.20.0.31
    installDisk: /dev/vda
    firmware: bios
    bmc: {type: redfish, address: BMC_A, username: admin, passwordRef: env:DEMO_PW}
  - name: b
    role: worker
    macs: ["52:54:00:10:00:32", "52:54:00:10:01:32"]
    ip: 10.20.0.32
    installDisk: /dev/vda
    bmc: {type: ipmi, address: 10.30.0.32, port: 6230, username: admin,
          passwordRef: file:/nonexistent/pw}
  - name: c
    role: worker
    macs: ["52:54:00:10:00:33"]
    ip: 10.20.0.33
    installDisk: /dev/vda
"""


def inv(lab: str = "", bmc_a: str = "10.30.0.31"):
    text = BASE.replace("LAB", lab).replace("BMC_A", bmc_a)
    return parse_inventory(with_catalog_versions(text), "demo.yaml").inventory


def test_same_inventory_same_lab(tmp_path: Path) -> None:
    one = lab_spec(inv(), tmp_path, "tcg")
    two = lab_spec(inv(), tmp_path, "tcg")
    assert one == two
    assert [domain_xml(one, v) for v in one.vms] == [domain_xml(two, v) for v in two.vms]
    a, b, c = one.vms
    assert (a.domain, b.domain) == ("demo-a", "demo-b")
    assert len({a.uuid, b.uuid, c.uuid}) == 3
    assert one.netns == "cloudctl-lab-demo" and one.bridge == "eth0"
    assert one.bridge_cidr == "10.20.0.2/24"
    assert b.macs == ("52:54:00:10:00:32", "52:54:00:10:01:32")
    # another cluster name: other names and UUIDs
    other = lab_spec(inv().model_copy(update={"cluster": inv().cluster.model_copy(
        update={"name": "other"})}), tmp_path, "tcg")
    assert other.vms[0].uuid != a.uuid and other.vms[0].domain == "other-a"


def test_defaults_and_lab_section(tmp_path: Path) -> None:
    d = lab_spec(inv(), tmp_path, "tcg").vms[0]
    assert (d.memory_mib, d.cpus, d.system_disk_gib, d.data_disk_gib) == (4096, 2, 20, 20)
    s = lab_spec(inv("lab: {memoryMib: 512, cpus: 1, systemDiskGib: 3, dataDiskGib: 5}"),
                 tmp_path, "tcg").vms[1]
    assert (s.memory_mib, s.cpus, s.system_disk_gib, s.data_disk_gib) == (512, 1, 3, 5)
    assert s.firmware == "uefi"  # the default
    with pytest.raises(InputError) as err:
        inv("lab: {memoryMb: 512}")
    assert "memoryMb" in str(err.value)


def test_domain_xml_bios_and_uefi(tmp_path: Path) -> None:
    spec = lab_spec(inv(), tmp_path, "tcg")
    bios = ET.fromstring(domain_xml(spec, spec.vms[0]))
    uefi = ET.fromstring(domain_xml(spec, spec.vms[1]))
    assert bios.get("type") == "qemu"
    assert bios.find("os/type").get("machine") == "pc"
    assert bios.find("os/bios").get("useserial") == "yes"
    assert bios.find("os/loader") is None
    assert [b.get("dev") for b in bios.findall("os/boot")] == ["network", "hd"]
    assert uefi.find("os/type").get("machine") == "q35"
    assert uefi.find("os/loader").text == str(OVMF_CODE)
    assert uefi.find("os/loader").get("secure") == "no"
    assert uefi.find("os/nvram").get("template") == str(OVMF_VARS)
    assert uefi.find("os/nvram").text == str(tmp_path / "nvram" / "b_VARS.fd")
    nics = uefi.findall("devices/interface")
    assert [n.find("mac").get("address") for n in nics] == list(spec.vms[1].macs)
    assert all(n.find("source").get("bridge") == "eth0" for n in nics)
    assert all(n.find("rom").get("enabled") == "no" for n in nics)  # firmware's own PXE
    assert bios.find("devices/interface/rom") is None  # the NIC's iPXE ROM
    disks = [d.find("source").get("file") for d in uefi.findall("devices/disk")]
    assert disks == [str(tmp_path / "disks" / "b-system.qcow2"),
                     str(tmp_path / "disks" / "b-data.qcow2")]
    assert uefi.find("devices/serial/source").get("path") == str(
        tmp_path / "console" / "b.log")
    assert uefi.find("uuid").text == spec.vms[1].uuid
    kvm = lab_spec(inv(), tmp_path, "kvm")
    assert ET.fromstring(domain_xml(kvm, kvm.vms[0])).get("type") == "kvm"


def test_bmc_endpoints(tmp_path: Path) -> None:
    spec = lab_spec(inv(), tmp_path, "tcg")
    a, b, c = spec.vms
    assert a.bmc is not None and a.bmc.endpoint == "https://10.30.0.31:443"
    assert b.bmc is not None and b.bmc.endpoint == "ipmi://10.30.0.32:6230"
    assert c.bmc is None
    assert spec.bmc_addresses == ["10.30.0.31", "10.30.0.32"]


def test_lab_bmc_needs_an_address(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        lab_spec(inv(bmc_a="bmc-a.example.com"), tmp_path, "tcg")
    assert "nodes[0].bmc.address" in str(err.value) and "node a" in str(err.value)


def test_resolve_accel() -> None:
    assert resolve_accel("auto", "flags\t: fpu vmx sse\n", True) == "kvm"
    assert resolve_accel("auto", "flags\t: fpu sse\n", True) == "tcg"  # paravirtual kvm
    assert resolve_accel("auto", "flags\t: fpu svm\n", False) == "tcg"
    assert resolve_accel("tcg", "flags\t: vmx\n", True) == "tcg"


def test_power_selection_errors() -> None:
    i = inv()
    assert [n.name for n in select(i, [])] == ["a", "b"]
    with pytest.raises(InputError) as err:
        select(i, ["c", "zz"])
    text = str(err.value)
    assert "no node 'zz'" in text and "node c has no bmc section" in text
    with pytest.raises(InputError):
        run_power(i, "reboot-now")


def test_password_references(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DEMO_PW", "pw1")
    assert resolve_password("a", "env:DEMO_PW") == "pw1"
    (tmp_path / "pw").write_text("pw2\n")
    assert resolve_password("b", f"file:{tmp_path / 'pw'}") == "pw2"
    monkeypatch.delenv("DEMO_PW")
    with pytest.raises(SecretsError, match=r"node a: .*DEMO_PW is not set"):
        resolve_password("a", "env:DEMO_PW")
    with pytest.raises(SecretsError, match=r"node b: .*cannot read /nonexistent/pw"):
        resolve_password("b", "file:/nonexistent/pw")


def test_unreachable_redfish_bmc_names_node_and_bmc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_PW", "pw")
    i = inv(bmc_a="127.0.0.1")
    node = i.nodes[0].model_copy(update={"bmc": i.nodes[0].bmc.model_copy(update={"port": 1})})
    i = i.model_copy(update={"nodes": [node, *i.nodes[1:]]})
    with pytest.raises(RemoteError) as err:
        run_power(i, "status", ["a"], timeout=5)
    assert err.value.exit_code == 6
    assert "node a: Redfish BMC https://127.0.0.1:1: unreachable (Connection refused)" in str(
        err.value)
