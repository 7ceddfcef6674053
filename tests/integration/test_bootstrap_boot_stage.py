"""The bare-metal boot stage of `cloudctl bootstrap` for real (root): in a network namespace,
with assets from a cache filled beforehand (no Internet) and a machine simulated with real
clients (udhcpc as PXE ROM and as iPXE, tftp-hpa, curl), `bootstrap --only boot` stages the iPXE
binaries, serves DHCP/TFTP/HTTP until the node has its initramfs, and records the stage.

Talos itself cannot run here, so the later stages are covered against the emulated rack."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from netns import Lab, require_root, with_catalog_versions
from test_boot_service import CP1, INVENTORY, NODE_CP1, pxe_boot

from cloudctl.boot.assets import MANIFEST, asset_files
from cloudctl.inventory import parse_inventory
from cloudctl.render.schematic import schematic_for

pytestmark = pytest.mark.root
ROOT = Path(__file__).resolve().parents[2]


def _fill_cache(cache: Path, inv_text: str) -> None:
    inv = parse_inventory(inv_text).inventory
    directory = cache / "cloudctl" / "assets" / schematic_for(inv).id / inv.cluster.talos_version
    directory.mkdir(parents=True)
    manifest = {}
    for remote, data in zip(
        asset_files(inv.image.arch).values(), (b"K" * 2_000_000, b"I" * 3_000_000), strict=True
    ):
        (directory / remote).write_bytes(data)
        manifest[remote] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    (directory / MANIFEST).write_text(json.dumps(manifest))


def test_boot_stage_serves_until_the_node_has_its_initramfs(tmp_path: Path) -> None:
    require_root("network namespaces, DHCP/TFTP ports")
    for tool in ("busybox", "tftp", "curl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
    if not Path("/usr/lib/ipxe/undionly.kpxe").is_file():
        pytest.skip("Debian's ipxe package is not installed (/usr/lib/ipxe)")
    inv_text = with_catalog_versions(INVENTORY + NODE_CP1)
    (tmp_path / "inventory.yaml").write_text(inv_text)
    shutil.copytree(ROOT / "tests/golden/secrets/rack1", tmp_path / "secrets/lab")
    _fill_cache(tmp_path / "cache", inv_text)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    argv = [
        "env",
        *(f"{k}={v}" for k, v in env.items()),
        sys.executable,
        "-m",
        "cloudctl.cli",
        "bootstrap",
        "-i",
        str(tmp_path / "inventory.yaml"),
        "--only",
        "boot",
        "--timeout",
        "90",
        "-o",
        "json",
    ]
    with Lab("bbs") as lab:
        srv = lab.add_host("srv", ip="10.20.0.2/24")
        cli = lab.add_host("cp1", mac=CP1)
        proc = srv.popen(argv, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:  # probe (3 s) + start
                if ":8080 " in srv.run(["ss", "-ltn"], check=False):
                    break
                time.sleep(0.2)
            sizes = pxe_boot(cli, tmp_path)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    assert sizes["kernel"] == 2_000_000 and sizes["initramfs"] == 3_000_000
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    done = [e for e in events if e["stage"] == "boot" and e["kind"] == "stage-done"]
    assert done and "every node fetched its initramfs" in done[0]["message"]
    state = json.loads((tmp_path / "clusters/lab/state.json").read_text())
    assert state["stages"]["boot"]["status"] == "done"
    # the iPXE binaries were staged into the cluster's TFTP root
    assert (tmp_path / "clusters/lab/tftp/undionly.kpxe").is_file()


EMULATED_NODE_AT_REAL_ADDRESS = """
import asyncio, sys
from cloudctl.emulate.talos_rack import Rack
from cloudctl.inventory import load_inventory

class OnTheWire(Rack):
    def socket_host(self, address):  # the node's own address in its namespace, not loopback
        return address

async def main():
    inv = load_inventory(sys.argv[1]).inventory
    async with OnTheWire(inv, port=50000, dhcp_addresses={"cp1": sys.argv[2]}):
        print("ready", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


def _cloudctl_argv(tmp_path: Path, *args: str) -> list[str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": str(ROOT),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    return ["env", *(f"{k}={v}" for k, v in env.items()), sys.executable, "-m", "cloudctl.cli",
            "bootstrap", "-i", str(tmp_path / "inventory.yaml"), *args]


def test_proxy_mode_discovery_finds_nodes_at_addresses_another_server_gave(
    tmp_path: Path,
) -> None:
    """Proxy-DHCP beside dnsmasq handing out addresses outside the inventory: the boot stage
    learns each node's address from its boot requests (iPXE fetching its script, kernel and
    initramfs over HTTP from its leased address), records it, and discovery probes it — the
    node is found there in maintenance mode, not only if it happened to get its inventory IP."""
    require_root("network namespaces, DHCP/TFTP ports")
    for tool in ("busybox", "curl", "dnsmasq"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
    if not Path("/usr/lib/ipxe/undionly.kpxe").is_file():
        pytest.skip("Debian's ipxe package is not installed (/usr/lib/ipxe)")
    from test_boot_service import udhcpc
    from test_dhcp_netns import start_dnsmasq, stop

    inv_text = with_catalog_versions(INVENTORY + NODE_CP1).replace(
        "dhcp: {mode: full, leaseTime: 600}", "dhcp: {mode: proxy}")
    (tmp_path / "inventory.yaml").write_text(inv_text)
    shutil.copytree(ROOT / "tests/golden/secrets/rack1", tmp_path / "secrets/lab")
    _fill_cache(tmp_path / "cache", inv_text)
    with Lab("bpx") as lab:
        site = lab.add_host("site", ip="10.20.0.1/24")
        srv = lab.add_host("srv", ip="10.20.0.2/24")
        cli = lab.add_host("cp1", mac=CP1)
        dnsmasq = start_dnsmasq(site, tmp_path)
        node = None
        try:
            proc = srv.popen(_cloudctl_argv(tmp_path, "--only", "boot", "--timeout", "90",
                                            "-o", "json"), stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                if ":8080 " in srv.run(["ss", "-ltn"], check=False):
                    break
                time.sleep(0.2)
            lease = udhcpc(cli, tmp_path)  # the address server is dnsmasq, not cloudctl
            address = lease["ip"]
            assert address.startswith("10.20.0.1") and address != "10.20.0.11", lease
            script = cli.run(["curl", "-sf", f"http://10.20.0.2:8080/ipxe/{CP1}.ipxe"])
            for kind in ("kernel", "initrd"):
                url = re.search(rf"^{kind} (\S+)", script, re.M)
                assert url, script
                cli.run(["curl", "-sf", "-o", str(tmp_path / kind), url.group(1)])
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            state = json.loads((tmp_path / "clusters/lab/state.json").read_text())
            assert state["nodes"]["cp1"]["boot_address"] == address
            done = [json.loads(x) for x in out.splitlines() if '"stage-done"' in x]
            assert f"booted at cp1={address}" in done[0]["message"]
            # Talos in maintenance mode on the leased address, in the node's namespace
            emu = tmp_path / "emu.py"
            emu.write_text(EMULATED_NODE_AT_REAL_ADDRESS)
            node = cli.popen(["env", f"PYTHONPATH={ROOT}", sys.executable, str(emu),
                              str(tmp_path / "inventory.yaml"), address],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            assert node.stdout is not None and node.stdout.readline().strip() == "ready"
            found = srv.run(_cloudctl_argv(tmp_path, "--only", "discover", "-o", "json"),
                            timeout=120)
            events = [json.loads(x) for x in found.splitlines() if x.startswith("{")]
            assert any(e["kind"] == "node" and e["node"] == "cp1"
                       and f"found in maintenance mode at {address}" in e["message"]
                       for e in events), events[-5:]
            state = json.loads((tmp_path / "clusters/lab/state.json").read_text())
            assert state["nodes"]["cp1"]["maintenance_endpoint"] == address
            assert state["stages"]["discover"]["status"] == "done"
        finally:
            if node is not None:
                node.terminate()
                node.wait(10)
            stop(dnsmasq)
