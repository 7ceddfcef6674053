"""iPXE scripts rendered from templates/ipxe."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from cloudctl.boot.ipxe import kernel_args, node_script, scripts_by_mac, unknown_script
from cloudctl.errors import InputError
from cloudctl.inventory.models import Inventory

BASE = """
cluster: {name: rack1, talosVersion: v1.13.5, kubernetesVersion: v1.35.0, vip: 10.20.0.10}
network: {interface: eno1, bootServer: 10.20.0.2, subnet: 10.20.0.0/24, gateway: 10.20.0.1}
nodes:
  - {name: cp1, role: controlplane, macs: ["52:54:00:10:00:11"], ip: 10.20.0.11}
  - name: w1
    role: worker
    macs: ["52:54:00:10:00:21", "52:54:00:10:01:21"]
    ip: 10.20.0.21
    kernelArgs: [net.ifnames=0, console=tty0]
"""

TALOS_ARGS = [
    "talos.platform=metal",
    "console=tty0",
    "console=ttyS0",
    "slab_nomerge",
    "pti=on",
    "init_on_alloc=1",
    "printk.devkmsg=on",
]


def inventory(**image: Any) -> Inventory:
    doc = yaml.safe_load(BASE)
    if image:
        doc["image"] = image
    return Inventory.model_validate(doc)


def test_kernel_args_amd64_defaults() -> None:
    inv = inventory()
    assert kernel_args(inv, inv.nodes[0]) == TALOS_ARGS


def test_kernel_args_arm64_console_and_extras_in_order() -> None:
    inv = inventory(arch="arm64", extraKernelArgs=["ima_appraise=off"])
    args = kernel_args(inv, inv.node("w1"))
    assert args[:3] == ["talos.platform=metal", "console=tty0", "console=ttyAMA0"]
    assert "console=ttyS0" not in args
    # inventory-wide extras, then the node's; the duplicate console=tty0 is dropped
    assert args[7:] == ["ima_appraise=off", "net.ifnames=0"]


@pytest.mark.parametrize("bad", ["a b", "x=$(y)", "a\nkernel evil", "q='1'", "a||b", "#c"])
def test_unsafe_kernel_args_are_refused_with_field_path(bad: str) -> None:
    doc = yaml.safe_load(BASE)
    doc["nodes"][1]["kernelArgs"] = ["ok=1", bad]
    inv = Inventory.model_validate(doc)
    with pytest.raises(InputError) as exc:
        kernel_args(inv, inv.node("w1"))
    assert exc.value.problems[0].path == "nodes[1].kernelArgs[1]"


def test_node_script_fetches_per_mac_urls_and_boots_maintenance_mode() -> None:
    inv = inventory()
    text = node_script(inv, inv.nodes[0], base_url="http://10.20.0.2:8080/")
    lines = text.splitlines()
    assert lines[0] == "#!ipxe"
    kernel = [ln for ln in lines if ln.startswith("kernel ")]
    initrd = [ln for ln in lines if ln.startswith("initrd ")]
    assert len(kernel) == 3 and len(initrd) == 3  # retried attempts
    assert kernel[0] == (
        "kernel http://10.20.0.2:8080/boot/52-54-00-10-00-11/kernel initrd=initramfs.xz "
        + " ".join(TALOS_ARGS)
        + " || goto failed1"
    )
    assert initrd[0] == (
        "initrd http://10.20.0.2:8080/boot/52-54-00-10-00-11/initramfs.xz || goto failed1"
    )
    assert "boot || goto failed1" in lines
    assert "talos.config" not in text
    assert lines.count("sleep 5 ||") == 2  # a delay between attempts, none after the last
    assert lines[-1] == "exit 1"
    # every goto has its label
    for n in (1, 2, 3):
        assert f":attempt{n}" in lines and f":failed{n}" in lines


def test_config_url_is_opt_in() -> None:
    inv = inventory()
    url = "http://10.20.0.2:8080/config/52-54-00-10-00-11/abcdefgh1234.yaml"
    text = node_script(inv, inv.nodes[0], base_url="http://10.20.0.2:8080", config_url=url)
    assert f"printk.devkmsg=on talos.config={url} || goto failed1" in text
    with pytest.raises(InputError):
        node_script(inv, inv.nodes[0], base_url="http://x", config_url="http://a b")


def test_bad_base_url_refused() -> None:
    inv = inventory()
    with pytest.raises(InputError, match="base_url"):
        node_script(inv, inv.nodes[0], base_url="tftp://10.20.0.2")


def test_rendering_is_deterministic() -> None:
    inv = inventory()
    a = node_script(inv, inv.nodes[1], base_url="http://10.20.0.2:8080")
    b = node_script(inventory(), inventory().nodes[1], base_url="http://10.20.0.2:8080")
    assert a == b


def test_unknown_script_exits_without_booting() -> None:
    text = unknown_script("52-54-00-AA-BB-CC")
    assert text.startswith("#!ipxe\n")
    assert "52:54:00:aa:bb:cc is not in the inventory" in text
    assert text.rstrip().endswith("exit 1")
    assert not any(ln.startswith(("kernel", "initrd", "boot", "chain")) for ln in text.splitlines())
    assert "this machine" in unknown_script("not-a-mac\nkernel evil")


def test_scripts_by_mac_covers_every_nic() -> None:
    inv = inventory()
    scripts = scripts_by_mac(inv, base_url="http://10.20.0.2:8080")
    assert set(scripts) == {"52:54:00:10:00:11", "52:54:00:10:00:21", "52:54:00:10:01:21"}
    assert scripts["52:54:00:10:00:21"] == scripts["52:54:00:10:01:21"]
    assert b"net.ifnames=0" in scripts["52:54:00:10:00:21"]
