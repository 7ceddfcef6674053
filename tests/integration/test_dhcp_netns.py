"""DHCP server against real clients in network namespaces (root).

busybox udhcpc and ISC dhclient get their inventory address; a flood of unknown MACs gets no
offer; proxy mode next to a dnsmasq address server gives boot options only; the rogue-DHCP probe
finds dnsmasq. Requests the server receives from real clients can be recorded into
tests/data/dhcp/ (``CLOUDCTL_RECORD_DHCP=1``) for the codec round-trip tests.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import socket
import time
from pathlib import Path

import pytest
from netns import Lab, LoopInNetns, entered_netns, require_root, with_catalog_versions

from cloudctl.boot.dhcp import codec
from cloudctl.boot.dhcp.codec import DhcpMessage, decode, encode
from cloudctl.boot.dhcp.config import dhcp_config_from_inventory
from cloudctl.boot.dhcp.probe import ensure_no_other_server, probe
from cloudctl.boot.dhcp.transport import DhcpServer
from cloudctl.errors import EnvironmentNotReady
from cloudctl.inventory import parse_inventory

pytestmark = pytest.mark.root

DATA = Path(__file__).resolve().parent.parent / "data" / "dhcp"
RECORD = os.environ.get("CLOUDCTL_RECORD_DHCP") == "1"
CP1, W1 = "52:54:00:10:00:11", "52:54:00:10:00:21"

INVENTORY = """
cluster: {name: lab, talosVersion: TALOS_VERSION, kubernetesVersion: K8S_VERSION, vip: 10.20.0.10}
network:
  interface: eth0
  bootServer: 10.20.0.2
  subnet: 10.20.0.0/24
  gateway: 10.20.0.1
  dns: [10.20.0.1]
  ntp: [10.20.0.1]
  dhcp: {mode: MODE, leaseTime: 600}
nodes:
  - {name: cp1, role: controlplane, macs: ["52:54:00:10:00:11"], ip: 10.20.0.11,
     installDisk: /dev/sda}
  - {name: w1, role: worker, macs: ["52:54:00:10:00:21"], ip: 10.20.0.21,
     installDisk: /dev/sda}
platform: {metallb: {enabled: false}}
"""


def lab_config(mode: str = "full"):
    inv = parse_inventory(
        with_catalog_versions(INVENTORY.replace("MODE", mode)), "lab.yaml"
    ).inventory
    return dhcp_config_from_inventory(inv)


@pytest.fixture(autouse=True)
def _root():
    require_root("network namespaces, DHCP ports")


class Recorder:
    """Wraps DhcpServer.handle to keep every datagram it receives."""

    def __init__(self, server: DhcpServer) -> None:
        self.datagrams: list[bytes] = []
        inner = server.handle

        def handle(data: bytes, addr: tuple[str, int], port: int):
            self.datagrams.append(data)
            return inner(data, addr, port)

        server.handle = handle  # type: ignore[method-assign]

    def save(self, client: str) -> None:
        if not RECORD:
            return
        DATA.mkdir(parents=True, exist_ok=True)
        seen: set[str] = set()
        for data in self.datagrams:
            name = f"{client}-{decode(data).type_name.lower()}.bin"
            if name not in seen:
                seen.add(name)
                (DATA / name).write_bytes(data)


def run_server(lab_loop: LoopInNetns, server: DhcpServer) -> None:
    lab_loop.call(server.start())


UDHCPC_SCRIPT = """#!/bin/sh
if [ "$1" = bound ]; then
  echo "ip=$ip subnet=$subnet router=$router dns=$dns hostname=$hostname" > {out}
  echo "lease=$lease serverid=$serverid" >> {out}
fi
exit 0
"""


def test_busybox_udhcpc_gets_its_inventory_address(tmp_path):
    cfg = lab_config()
    with Lab("dhu") as lab:
        srv = lab.add_host("srv", ip="10.20.0.2/24")
        cli = lab.add_host("cli", mac=CP1)
        events = []
        with LoopInNetns(srv.ns) as loop:
            server = DhcpServer(cfg, on_event=events.append)
            rec = Recorder(server)
            loop.call(server.start())
            out = tmp_path / "lease"
            script = tmp_path / "udhcpc.sh"
            script.write_text(UDHCPC_SCRIPT.format(out=out))
            script.chmod(0o755)
            cli.run(
                [
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
                    "-x",
                    "hostname:bbox",
                ],
                timeout=30,
            )
            loop.call(server.stop())
        rec.save("udhcpc")
    got = dict(kv.split("=", 1) for kv in out.read_text().split())
    assert got["ip"] == "10.20.0.11"
    assert got["subnet"] == "255.255.255.0"
    assert got["router"] == "10.20.0.1"
    assert got["dns"] == "10.20.0.1"
    assert got["hostname"] == "cp1"
    assert got["lease"] == "600"
    assert got["serverid"] == "10.20.0.2"
    assert [e.kind for e in events] == ["dhcp-offer", "dhcp-ack"]
    assert all(e.mac == CP1 for e in events)


DHCLIENT_SCRIPT = """#!/bin/sh
if [ "$reason" = BOUND ]; then
  echo "ip=$new_ip_address mask=$new_subnet_mask routers=$new_routers host=$new_host_name" > {out}
fi
exit 0
"""


@pytest.mark.skipif(shutil.which("dhclient") is None, reason="ISC dhclient not installed")
def test_isc_dhclient_gets_its_inventory_address(tmp_path):
    cfg = lab_config()
    with Lab("dhi") as lab:
        srv = lab.add_host("srv", ip="10.20.0.2/24")
        cli = lab.add_host("cli", mac=W1)
        with LoopInNetns(srv.ns) as loop:
            server = DhcpServer(cfg)
            rec = Recorder(server)
            loop.call(server.start())
            out = tmp_path / "lease"
            script = tmp_path / "dhclient.sh"
            script.write_text(DHCLIENT_SCRIPT.format(out=out))
            script.chmod(0o755)
            conf = tmp_path / "dhclient.conf"
            conf.write_text(
                "timeout 20;\nretry 1;\n"
                "request subnet-mask, routers, domain-name-servers, host-name;\n"
            )
            cli.run(
                [
                    "dhclient",
                    "-1",
                    "-v",
                    "-cf",
                    str(conf),
                    "-sf",
                    str(script),
                    "-lf",
                    str(tmp_path / "leases"),
                    "-pf",
                    str(tmp_path / "pid"),
                    "eth0",
                ],
                timeout=40,
            )
            # release it again: the server sees a RELEASE for its lease
            cli.run(
                [
                    "dhclient",
                    "-r",
                    "-cf",
                    str(conf),
                    "-sf",
                    str(script),
                    "-lf",
                    str(tmp_path / "leases"),
                    "-pf",
                    str(tmp_path / "pid"),
                    "eth0",
                ],
                check=False,
                timeout=20,
            )
            loop.call(server.stop())
        rec.save("dhclient")
    got = dict(kv.split("=", 1) for kv in out.read_text().split())
    assert got == {
        "ip": "10.20.0.21",
        "mask": "255.255.255.0",
        "routers": "10.20.0.1",
        "host": "w1",
    }


# ----------------------------------------------------------------------------- raw client


class RawClient:
    """A DHCP client made of one UDP socket on :68 in the calling thread's namespace."""

    def __init__(self, ifname: str = "eth0") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("0.0.0.0", 68))

    def send(self, msg: DhcpMessage, dest: tuple[str, int] = ("255.255.255.255", 67)) -> None:
        self.sock.sendto(encode(msg, pad_to=300), dest)

    def collect(self, seconds: float) -> list[tuple[DhcpMessage, tuple[str, int]]]:
        out = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, addr = self.sock.recvfrom(4096)
            except TimeoutError:
                break
            msg = decode(data)
            if msg.op == codec.BOOTREPLY:
                out.append((msg, addr))
        return out

    def close(self) -> None:
        self.sock.close()


def discover(mac: str, xid: int, *extra: tuple[int, bytes]) -> DhcpMessage:
    return DhcpMessage(
        op=codec.BOOTREQUEST,
        xid=xid,
        flags=codec.BROADCAST_FLAG,
        chaddr=codec.mac_bytes(mac).ljust(16, b"\0"),
        options=((codec.OPT_MESSAGE_TYPE, bytes([codec.DISCOVER])), *extra),
    )


def test_a_thousand_unknown_macs_get_no_offer():
    cfg = lab_config()
    n = 1000
    with Lab("dhx") as lab:
        srv = lab.add_host("srv", ip="10.20.0.2/24")
        cli = lab.add_host("cli")
        with LoopInNetns(srv.ns) as loop:
            server = DhcpServer(cfg)
            loop.call(server.start())
            with entered_netns(cli.ns):
                client = RawClient()
                try:
                    replies = []
                    for i in range(n):
                        mac = f"02:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}:01"
                        client.send(discover(mac, 0x10000 + i, (codec.OPT_CLIENT_ARCH, b"\0\0")))
                        if i % 100 == 99:
                            replies += client.collect(0.05)
                    replies += client.collect(1.0)
                    # control: an inventory MAC on the same path is answered
                    client.send(discover(CP1, 0xC0FFEE))
                    control = client.collect(2.0)
                finally:
                    client.close()
            stats = server.stats
            loop.call(server.stop())
    assert replies == []
    assert stats.received >= n  # every request reached the server and was refused
    assert stats.ignored >= n and stats.replies == 1
    assert [m.xid for m, _ in control] == [0xC0FFEE]
    assert control[0][0].yiaddr == ipaddress.IPv4Address("10.20.0.11")


# ----------------------------------------------------------------------------- proxy + dnsmasq


def start_dnsmasq(host, tmp_path: Path):
    return host.popen(
        [
            "dnsmasq",
            "--no-daemon",
            "--port=0",
            "--interface=eth0",
            "--bind-interfaces",
            "--dhcp-range=10.20.0.100,10.20.0.150,255.255.255.0,2m",
            "--no-ping",
            f"--dhcp-leasefile={tmp_path / 'dnsmasq.leases'}",
            "--log-dhcp",
            f"--pid-file={tmp_path / 'dnsmasq.pid'}",
            "--conf-file=/dev/null",
        ]
    )


def stop(proc) -> str:
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=5)
    except Exception:
        proc.kill()
        out, _ = proc.communicate()
    return out.decode(errors="replace") if out else ""


@pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="dnsmasq not installed")
def test_proxy_mode_beside_dnsmasq(tmp_path):
    cfg = lab_config("proxy")
    pxe = (
        (codec.OPT_CLIENT_ARCH, b"\x00\x00"),
        (codec.OPT_CLIENT_NDI, b"\x01\x02\x01"),
        (codec.OPT_VENDOR_CLASS, b"PXEClient:Arch:00000:UNDI:002001"),
        (codec.OPT_CLIENT_UUID, b"\x00" + bytes(range(16))),
        (codec.OPT_PARAM_REQUEST, bytes([1, 3, 43, 54, 60, 66, 67])),
    )
    with Lab("dhp") as lab:
        site = lab.add_host("site", ip="10.20.0.1/24")
        srv = lab.add_host("srv", ip="10.20.0.2/24")
        cli = lab.add_host("cli", mac=CP1)
        dnsmasq = start_dnsmasq(site, tmp_path)
        events = []
        try:
            time.sleep(0.5)
            with LoopInNetns(srv.ns) as loop:
                server = DhcpServer(cfg, on_event=events.append)
                loop.call(server.start())
                with entered_netns(cli.ns):
                    client = RawClient()
                    try:
                        client.send(discover(CP1, 0x4242, *pxe))
                        offers = client.collect(2.0)
                        by_server = {m.server_id: m for m, _ in offers}
                        site_offer = by_server[ipaddress.IPv4Address("10.20.0.1")]
                        proxy_offer = by_server[ipaddress.IPv4Address("10.20.0.2")]
                        # the PXE client requests the address from dnsmasq ...
                        client.send(
                            DhcpMessage(
                                op=codec.BOOTREQUEST,
                                xid=0x4243,
                                flags=codec.BROADCAST_FLAG,
                                chaddr=codec.mac_bytes(CP1).ljust(16, b"\0"),
                                options=(
                                    (codec.OPT_MESSAGE_TYPE, bytes([codec.REQUEST])),
                                    (codec.OPT_SERVER_ID, site_offer.server_id.packed),
                                    (codec.OPT_REQUESTED_IP, site_offer.yiaddr.packed),
                                    *pxe,
                                ),
                            )
                        )
                        acks = client.collect(2.0)
                        addr = site_offer.yiaddr
                        cli.run(["ip", "addr", "add", f"{addr}/24", "dev", "eth0"])
                        # ... then asks the boot server on :4011 (PXE boot server request)
                        client.send(
                            DhcpMessage(
                                op=codec.BOOTREQUEST,
                                xid=0x4244,
                                ciaddr=addr,
                                chaddr=codec.mac_bytes(CP1).ljust(16, b"\0"),
                                options=((codec.OPT_MESSAGE_TYPE, bytes([codec.REQUEST])), *pxe),
                            ),
                            ("10.20.0.2", 4011),
                        )
                        pxe_acks = client.collect(2.0)
                    finally:
                        client.close()
                learned = server.state.mac_of(addr)
                loop.call(server.stop())
        finally:
            log = stop(dnsmasq)
    assert cfg.dynamic_range is None
    assert (
        ipaddress.IPv4Address("10.20.0.100")
        <= site_offer.yiaddr
        <= ipaddress.IPv4Address("10.20.0.150")
    ), log
    assert proxy_offer.yiaddr == codec.ZERO
    assert proxy_offer.file.rstrip(b"\0") == b"undionly.kpxe"
    assert proxy_offer.siaddr == ipaddress.IPv4Address("10.20.0.2")
    assert proxy_offer.option(codec.OPT_VENDOR_CLASS) == b"PXEClient"
    assert proxy_offer.option(codec.OPT_VENDOR_SPECIFIC) == b"\x06\x01\x08\xff"
    ack_servers = [(m.server_id, m.message_type) for m, _ in acks]
    assert (ipaddress.IPv4Address("10.20.0.1"), codec.ACK) in ack_servers
    assert all(sid != ipaddress.IPv4Address("10.20.0.2") for sid, _ in ack_servers)
    assert len(pxe_acks) == 1
    ack, src = pxe_acks[0]
    assert src == ("10.20.0.2", 4011)
    assert ack.message_type == codec.ACK and ack.yiaddr == codec.ZERO
    assert ack.file.rstrip(b"\0") == b"undionly.kpxe"
    assert all(e.kind in ("dhcp-offer", "dhcp-ack") for e in events)
    assert learned == CP1


@pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="dnsmasq not installed")
def test_rogue_probe_finds_dnsmasq_and_refuses(tmp_path):
    with Lab("dhr") as lab:
        site = lab.add_host("site", ip="10.20.0.1/24")
        srv = lab.add_host("srv", ip="10.20.0.2/24")
        with entered_netns(srv.ns):
            quiet = asyncio.run(probe("eth0", wait=1.0))
        dnsmasq = start_dnsmasq(site, tmp_path)
        try:
            time.sleep(0.5)
            with entered_netns(srv.ns):
                found = asyncio.run(probe("eth0", wait=2.0))
                with pytest.raises(EnvironmentNotReady) as err:
                    asyncio.run(ensure_no_other_server("eth0", wait=2.0))
                forced = asyncio.run(ensure_no_other_server("eth0", wait=1.0, force=True))
        finally:
            stop(dnsmasq)
    assert quiet == []
    assert [(s.ip, s.mac) for s in found] == [("10.20.0.1", site.mac)]
    assert ipaddress.IPv4Address(found[0].offered) in ipaddress.IPv4Network("10.20.0.0/24")
    assert "10.20.0.1" in str(err.value) and site.mac in str(err.value)
    assert err.value.exit_code == 5
    assert len(forced) == 1
