"""The boot service end to end with real clients in network namespaces (root).

A simulated node walks the real network-boot path: busybox udhcpc as a PXE ROM (address + boot
file), tftp-hpa fetches the iPXE binary, udhcpc again as iPXE (user-class "iPXE": script URL),
curl fetches the script and then the kernel and initramfs URLs the script names. The service
tracks the phases, stops by itself when every node is done, names the nodes never seen on
timeout, and releases its ports when cancelled.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import socket
import time
from pathlib import Path

import pytest
from netns import Lab, LoopInNetns, entered_netns, require_root, with_catalog_versions

from cloudctl.boot.events import BootEvent
from cloudctl.boot.service import PHASES, BootService
from cloudctl.errors import EnvironmentNotReady, Timeout
from cloudctl.inventory import parse_inventory

pytestmark = pytest.mark.root

CP1, W1 = "52:54:00:10:00:11", "52:54:00:10:00:21"
NODE_CP1 = (
    '  - {name: cp1, role: controlplane, macs: ["52:54:00:10:00:11"], ip: 10.20.0.11, '
    "installDisk: /dev/sda}\n"
)
NODE_W1 = (
    '  - {name: w1, role: worker, macs: ["52:54:00:10:00:21"], ip: 10.20.0.21, '
    "installDisk: /dev/sda}\n"
)
INVENTORY = """
cluster: {name: lab, talosVersion: TALOS_VERSION, kubernetesVersion: K8S_VERSION, vip: 10.20.0.10}
network:
  interface: eth0
  bootServer: 10.20.0.2
  subnet: 10.20.0.0/24
  gateway: 10.20.0.1
  dns: [10.20.0.1]
  dhcp: {mode: full, leaseTime: 600}
platform: {metallb: {enabled: false}}
nodes:
"""

UDHCPC_SCRIPT = """#!/bin/sh
if [ "$1" = bound ]; then
  ip addr flush dev "$interface"
  ip addr add "$ip/$mask" dev "$interface"
  echo "ip=$ip siaddr=$siaddr boot_file=$boot_file" > "$OUT"
fi
exit 0
"""


@pytest.fixture(autouse=True)
def _root():
    require_root("network namespaces, DHCP/TFTP ports")
    for tool in ("busybox", "tftp", "curl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")


def inventory(*nodes: str):
    return parse_inventory(with_catalog_versions(INVENTORY + "".join(nodes)), "lab.yaml").inventory


@pytest.fixture
def boot_files(tmp_path):
    root = tmp_path / "tftp"
    root.mkdir()
    for name in ("undionly.kpxe", "snponly.efi", "ipxe.efi"):
        src = Path("/usr/lib/ipxe") / name
        if src.is_file():
            shutil.copy(src, root / name)
        else:
            (root / name).write_bytes(b"stand-in " + name.encode() * 1000)
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"K" * 3_000_000)
    initrd = tmp_path / "initramfs.xz"
    initrd.write_bytes(b"I" * 5_000_000)
    return root, {"kernel": kernel, "initramfs.xz": initrd}


def udhcpc(host, tmp_path: Path, *extra: str) -> dict[str, str]:
    out = tmp_path / f"lease-{time.monotonic_ns()}"
    script = tmp_path / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    host.run(
        [
            "env",
            f"OUT={out}",
            "busybox",
            "udhcpc",
            "-i",
            "eth0",
            "-f",
            "-q",
            "-n",
            "-t",
            "5",
            "-T",
            "1",
            "-s",
            str(script),
            *extra,
        ],
        timeout=30,
    )
    return dict(kv.split("=", 1) for kv in out.read_text().split())


def pxe_boot(host, tmp_path: Path) -> dict[str, int]:
    """The network-boot path of one machine, with real clients; returns bytes fetched."""
    # 1. the PXE ROM: address and boot file
    rom = udhcpc(host, tmp_path, "-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000")
    assert rom["ip"] and rom["boot_file"] == "undionly.kpxe", rom
    dest = tmp_path / f"{host.ns}-undionly.kpxe"
    host.run(["tftp", rom["siaddr"], "-m", "binary", "-c", "get", rom["boot_file"], str(dest)])
    # 2. iPXE: user-class "iPXE" as iPXE sends it (plain string) -> per-MAC script URL
    ipxe = udhcpc(host, tmp_path, "-x", "0x4d:69505845", "-x", "0x5d:0000")
    url = ipxe["boot_file"]
    assert url.startswith("http://10.20.0.2:8080/ipxe/") and url.endswith(".ipxe"), ipxe
    script = host.run(["curl", "-sf", url])
    kernel_url = re.search(r"^kernel (\S+)", script, re.M)
    initrd_url = re.search(r"^initrd (\S+)", script, re.M)
    assert kernel_url and initrd_url, script
    sizes = {"boot-file": dest.stat().st_size}
    for name, u in (("kernel", kernel_url.group(1)), ("initramfs", initrd_url.group(1))):
        out = tmp_path / f"{host.ns}-{name}"
        host.run(["curl", "-sf", "-o", str(out), u])
        sizes[name] = out.stat().st_size
    return sizes


def service(inv, boot_files, events, **kw) -> BootService:
    root, assets = boot_files
    return BootService(
        inv,
        assets=assets,
        tftp_root=root,
        timeout=kw.pop("timeout", 60),
        on_event=events.append,
        probe_wait=kw.pop("probe_wait", 0.5),
        **kw,
    )


def test_service_stops_by_itself_when_every_node_has_its_initramfs(tmp_path, boot_files):
    events: list[BootEvent] = []
    svc = service(inventory(NODE_CP1), boot_files, events, timeout=90)
    with Lab("bsa") as lab:
        srv = lab.add_host("srv", ip="10.20.0.2/24")
        cli = lab.add_host("cp1", mac=CP1)
        with LoopInNetns(srv.ns) as loop:
            fut = loop.submit(svc.run())
            time.sleep(1.0)  # probe (0.5 s) + start
            t0 = time.monotonic()
            sizes = pxe_boot(cli, tmp_path)
            result = fut.result(30)
            stopped_after = time.monotonic() - t0
    assert result.complete and result.missing == () and result.incomplete == ()
    assert list(result.nodes["cp1"]) == list(PHASES)
    assert result.elapsed < 60 and stopped_after < 30
    assert sizes["kernel"] == 3_000_000 and sizes["initramfs"] == 5_000_000
    kinds = {e.kind for e in events}
    assert {"dhcp-offer", "dhcp-ack", "tftp-sent", "http-sent"} <= kinds
    for e in events:
        assert e.to_json().startswith("{")


def test_timeout_names_the_nodes_never_seen(tmp_path, boot_files):
    events: list[BootEvent] = []
    svc = service(inventory(NODE_CP1, NODE_W1), boot_files, events, timeout=12)
    with Lab("bsb") as lab:
        srv = lab.add_host("srv", ip="10.20.0.2/24")
        cli = lab.add_host("cp1", mac=CP1)
        with LoopInNetns(srv.ns) as loop:
            fut = loop.submit(svc.run())
            time.sleep(1.0)
            # cp1 gets as far as its address only
            udhcpc(cli, tmp_path)
            result = fut.result(30)
    assert not result.complete
    assert result.missing == ("w1",)
    assert result.incomplete == ("cp1",)
    assert set(result.nodes["cp1"]) == {"offered", "acked"}
    with pytest.raises(Timeout, match=r"never seen: w1.*cp1 \(last: acked\)") as err:
        result.check()
    assert err.value.exit_code == 7


def test_cancel_stops_every_server_and_frees_the_ports(tmp_path, boot_files):
    svc = service(inventory(NODE_CP1), boot_files, [], timeout=600)
    with Lab("bsc") as lab:
        srv = lab.add_host("srv", ip="10.20.0.2/24")
        with LoopInNetns(srv.ns) as loop:
            fut = loop.submit(svc.run())
            time.sleep(1.5)
            fut.cancel()
            time.sleep(0.5)
            with entered_netns(srv.ns):
                for kind, port in (
                    (socket.SOCK_DGRAM, 67),
                    (socket.SOCK_DGRAM, 69),
                    (socket.SOCK_STREAM, 8080),
                ):
                    s = socket.socket(socket.AF_INET, kind)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("10.20.0.2" if port != 67 else "0.0.0.0", port))
                    if kind == socket.SOCK_STREAM:
                        s.listen()
                    s.close()


def test_full_mode_refuses_to_start_beside_another_dhcp_server(tmp_path, boot_files):
    svc = service(inventory(NODE_CP1), boot_files, [], timeout=5, probe_wait=2.0)
    with Lab("bsd") as lab:
        site = lab.add_host("site", ip="10.20.0.1/24")
        srv = lab.add_host("srv", ip="10.20.0.2/24")
        dnsmasq = site.popen(
            [
                "dnsmasq",
                "--no-daemon",
                "--port=0",
                "--interface=eth0",
                "--bind-interfaces",
                "--dhcp-range=10.20.0.100,10.20.0.150,2m",
                "--no-ping",
                "--conf-file=/dev/null",
                f"--dhcp-leasefile={tmp_path / 'leases'}",
            ]
        )
        try:
            time.sleep(0.5)
            with (
                LoopInNetns(srv.ns) as loop,
                pytest.raises(EnvironmentNotReady, match=r"10\.20\.0\.1"),
            ):
                loop.call(svc.run(), timeout=30)
        finally:
            dnsmasq.terminate()
            dnsmasq.wait(5)
    assert ipaddress.IPv4Address("10.20.0.2") == svc.cfg.server_ip


def test_keep_dhcp_answers_the_booted_os_until_closed(tmp_path, boot_files):
    svc = service(inventory(NODE_CP1), boot_files, [], timeout=90, keep_dhcp=True)
    with Lab("bse") as lab:
        srv = lab.add_host("srv", ip="10.20.0.2/24")
        cli = lab.add_host("cp1", mac=CP1)
        with LoopInNetns(srv.ns) as loop:
            fut = loop.submit(svc.run())
            time.sleep(1.0)
            pxe_boot(cli, tmp_path)
            result = fut.result(30)
            # the booted OS (here: udhcpc again) still gets its address; TFTP/HTTP are gone
            lease = udhcpc(cli, tmp_path)
            http = cli.run(
                [
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "http://10.20.0.2:8080/ipxe/52-54-00-10-00-11.ipxe",
                ],
                check=False,
            )
            loop.call(svc.close_dhcp())
            with entered_netns(srv.ns):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("0.0.0.0", 67))  # released
                s.close()
    assert result.complete
    assert lease["ip"] == "10.20.0.11"
    assert http == "000"  # connection refused: the HTTP server stopped
