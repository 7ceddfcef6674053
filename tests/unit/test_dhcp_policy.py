"""DHCP policy (sans-IO): who is answered, with what, and where the reply goes."""

from __future__ import annotations

import ipaddress

import pytest

from cloudctl.boot.dhcp import codec
from cloudctl.boot.dhcp.codec import DhcpMessage, decode, encode
from cloudctl.boot.dhcp.config import dhcp_config_from_inventory
from cloudctl.boot.dhcp.policy import PXE_PORT, LeaseState, decide
from cloudctl.catalog import minor_of, parse_version, talos_catalog
from cloudctl.errors import InputError
from cloudctl.inventory import parse_inventory

IP = ipaddress.IPv4Address
CP1 = "52:54:00:10:00:11"
CP3_SECOND = "52:54:00:10:01:13"
STRANGER = "02:00:00:00:99:99"
SERVER = IP("10.20.0.2")

INVENTORY = """
cluster: {name: rack1, talosVersion: TALOS_VERSION, kubernetesVersion: K8S_VERSION, vip: 10.20.0.10}
network:
  interface: eth9
  bootServer: 10.20.0.2
  subnet: 10.20.0.0/24
  gateway: 10.20.0.1
  dns: [10.20.0.1, 9.9.9.9]
  ntp: [10.20.0.1, pool.ntp.org]
  dhcp: {mode: MODE, leaseTime: 600RANGE}
nodes:
  - {name: cp1, role: controlplane, macs: ["52:54:00:10:00:11"], ip: 10.20.0.11,
     installDisk: /dev/sda}
  - {name: cp2, role: controlplane, macs: ["52:54:00:10:00:12"], ip: 10.20.0.12,
     installDisk: /dev/sda}
  - name: cp3
    role: controlplane
    macs: ["52:54:00:10:00:13", "52:54:00:10:01:13"]
    ip: 10.20.0.13
    installDisk: /dev/sda
platform: {metallb: {enabled: false}}
"""


def inventory(mode: str = "full", with_range: bool = False):
    rng = ", range: {start: 10.20.0.200, end: 10.20.0.202}" if with_range else ""
    cat = talos_catalog()
    talos = max(cat.releases, key=parse_version)
    k8s = f"v{cat.minors[minor_of(talos)].kubernetes_max}.0"
    text = INVENTORY.replace("MODE", mode).replace("RANGE", rng)
    text = text.replace("TALOS_VERSION", talos).replace("K8S_VERSION", k8s)
    return parse_inventory(text, "test.yaml").inventory


def config(mode: str = "full", with_range: bool = False, **kw):
    return dhcp_config_from_inventory(inventory(mode, with_range), **kw)


def request(
    mtype: int,
    mac: str = CP1,
    *,
    xid: int = 0x1234,
    ciaddr: str = "0.0.0.0",
    giaddr: str = "0.0.0.0",
    flags: int = 0,
    opts: tuple[tuple[int, bytes], ...] = (),
) -> DhcpMessage:
    msg = DhcpMessage(
        op=codec.BOOTREQUEST,
        xid=xid,
        flags=flags,
        ciaddr=IP(ciaddr),
        giaddr=IP(giaddr),
        chaddr=codec.mac_bytes(mac).ljust(16, b"\0"),
        options=((codec.OPT_MESSAGE_TYPE, bytes([mtype])), *opts),
    )
    # every request the policy sees has been through the wire format
    return decode(encode(msg))


def sid(ip: str = "10.20.0.2") -> tuple[int, bytes]:
    return (codec.OPT_SERVER_ID, IP(ip).packed)


def req_ip(ip: str) -> tuple[int, bytes]:
    return (codec.OPT_REQUESTED_IP, IP(ip).packed)


def arch(n: int) -> tuple[int, bytes]:
    return (codec.OPT_CLIENT_ARCH, n.to_bytes(2, "big"))


PXE_VC = (codec.OPT_VENDOR_CLASS, b"PXEClient:Arch:00000:UNDI:002001")


# ----------------------------------------------------------------------------- full mode


def test_discover_from_inventory_mac_gets_reserved_address_and_options():
    cfg = config()
    d = decide(request(codec.DISCOVER), cfg, LeaseState(), 1000.0)
    assert d.event == "dhcp-offer" and d.reply is not None
    r = d.reply
    assert r.op == codec.BOOTREPLY and r.xid == 0x1234 and r.message_type == codec.OFFER
    assert r.yiaddr == IP("10.20.0.11")
    assert r.server_id == SERVER
    assert r.option(codec.OPT_SUBNET_MASK) == IP("255.255.255.0").packed
    assert r.option(codec.OPT_ROUTER) == IP("10.20.0.1").packed
    assert r.option(codec.OPT_DNS) == IP("10.20.0.1").packed + IP("9.9.9.9").packed
    assert r.option(codec.OPT_NTP) == IP("10.20.0.1").packed  # names cannot go in option 42
    assert r.lease_time == 600
    assert r.option(codec.OPT_HOSTNAME) == b"cp1"
    assert r.file.rstrip(b"\0") == b"" and r.siaddr == codec.ZERO  # not a PXE client: no boot file
    assert d.dest == ("255.255.255.255", 68)


def test_unknown_mac_gets_nothing_without_a_range():
    cfg = config()
    for mtype in (codec.DISCOVER, codec.REQUEST, codec.INFORM):
        d = decide(request(mtype, STRANGER, opts=(sid(),)), cfg, LeaseState(), 0.0)
        assert d.reply is None and d.event is None and "unknown MAC" in d.reason


def test_second_nic_of_a_node_is_not_given_the_node_address():
    d = decide(request(codec.DISCOVER, CP3_SECOND), config(), LeaseState(), 0.0)
    assert d.reply is None


def test_full_exchange_discover_request_ack_then_renew():
    cfg, state = config(), LeaseState()
    offer = decide(request(codec.DISCOVER), cfg, state, 0.0)
    state.apply(offer.update)
    ack = decide(request(codec.REQUEST, opts=(sid(), req_ip("10.20.0.11"))), cfg, state, 1.0)
    state.apply(ack.update)
    assert ack.event == "dhcp-ack" and ack.reply and ack.reply.yiaddr == IP("10.20.0.11")
    assert state.mac_of("10.20.0.11") == CP1
    renew = decide(request(codec.REQUEST, ciaddr="10.20.0.11"), cfg, state, 300.0)
    assert renew.event == "dhcp-ack"
    assert renew.dest == ("10.20.0.11", 68)  # RENEWING: unicast to ciaddr


def test_request_for_wrong_address_is_nakked_by_broadcast():
    cfg = config()
    d = decide(request(codec.REQUEST, opts=(sid(), req_ip("10.20.0.99"))), cfg, LeaseState(), 0.0)
    assert d.event == "dhcp-nak" and d.reply is not None
    assert d.reply.message_type == codec.NAK and d.reply.yiaddr == codec.ZERO
    assert d.dest == ("255.255.255.255", 68)
    # INIT-REBOOT with a stale address from another network: NAK too
    d = decide(request(codec.REQUEST, opts=(req_ip("192.168.1.7"),)), cfg, LeaseState(), 0.0)
    assert d.event == "dhcp-nak"
    # INIT-REBOOT with the right address: ACK
    d = decide(request(codec.REQUEST, opts=(req_ip("10.20.0.11"),)), cfg, LeaseState(), 0.0)
    assert d.event == "dhcp-ack"


def test_request_for_another_server_is_ignored_and_frees_the_offer():
    cfg, state = config(with_range=True), LeaseState()
    d = decide(request(codec.DISCOVER, STRANGER), cfg, state, 0.0)
    state.apply(d.update)
    assert state.leases[STRANGER].ip == IP("10.20.0.200")
    d = decide(
        request(codec.REQUEST, STRANGER, opts=(sid("10.20.0.1"), req_ip("10.20.0.50"))),
        cfg,
        state,
        1.0,
    )
    assert d.reply is None and "chose server 10.20.0.1" in d.reason
    state.apply(d.update)
    assert STRANGER not in state.leases


def test_dynamic_range_allocates_distinct_addresses_and_runs_out():
    cfg, state = config(with_range=True), LeaseState()
    got = []
    for i in range(4):
        mac = f"02:00:00:00:00:{i:02x}"
        d = decide(request(codec.DISCOVER, mac), cfg, state, 0.0)
        state.apply(d.update)
        got.append(d.reply.yiaddr if d.reply else None)
    assert got[:3] == [IP("10.20.0.200"), IP("10.20.0.201"), IP("10.20.0.202")]
    assert got[3] is None  # range of three exhausted
    # offers expire: a later client gets an address again
    d = decide(request(codec.DISCOVER, "02:00:00:00:00:99"), cfg, state, 3600.0)
    assert d.reply is not None and cfg.in_range(d.reply.yiaddr)


def test_release_and_decline():
    cfg, state = config(with_range=True), LeaseState()
    state.apply(decide(request(codec.DISCOVER, STRANGER), cfg, state, 0.0).update)
    ack = decide(
        request(codec.REQUEST, STRANGER, opts=(sid(), req_ip("10.20.0.200"))), cfg, state, 0
    )
    state.apply(ack.update)
    rel = decide(
        request(codec.RELEASE, STRANGER, ciaddr="10.20.0.200", opts=(sid(),)), cfg, state, 5
    )
    assert rel.event == "dhcp-release" and rel.reply is None
    state.apply(rel.update)
    assert STRANGER not in state.leases
    dec = decide(
        request(codec.DECLINE, STRANGER, opts=(sid(), req_ip("10.20.0.200"))), cfg, state, 6
    )
    assert dec.event == "dhcp-decline" and dec.reply is None
    state.apply(dec.update)
    d = decide(request(codec.DISCOVER, STRANGER), cfg, state, 7.0)
    assert d.reply is not None and d.reply.yiaddr != IP("10.20.0.200")  # declined address skipped


def test_inform_gets_options_without_address_or_lease():
    d = decide(request(codec.INFORM, ciaddr="10.20.0.11"), config(), LeaseState(), 0.0)
    assert d.event == "dhcp-ack" and d.reply is not None
    assert d.reply.yiaddr == codec.ZERO and d.reply.lease_time is None
    assert d.reply.option(codec.OPT_ROUTER) is not None
    assert d.dest == ("10.20.0.11", 68)


def test_relayed_request_is_answered_to_the_relay():
    d = decide(request(codec.DISCOVER, giaddr="10.20.0.1"), config(), LeaseState(), 0.0)
    assert d.dest == ("10.20.0.1", 67)
    assert d.reply is not None and d.reply.giaddr == IP("10.20.0.1")
    nak = decide(
        request(codec.REQUEST, giaddr="10.20.0.1", opts=(sid(), req_ip("10.20.0.77"))),
        config(),
        LeaseState(),
        0.0,
    )
    assert nak.dest == ("10.20.0.1", 67) and nak.reply is not None and nak.reply.broadcast
    # a relay from a subnet we do not serve
    d = decide(request(codec.DISCOVER, giaddr="172.16.0.1"), config(), LeaseState(), 0.0)
    assert d.reply is None


# ----------------------------------------------------------------------------- boot files


@pytest.mark.parametrize(
    ("opts", "expected"),
    [
        ((arch(0), PXE_VC), "undionly.kpxe"),
        ((arch(6),), "snponly.efi"),
        ((arch(7),), "snponly.efi"),
        ((arch(9),), "snponly.efi"),
        ((arch(11),), "ipxe-arm64.efi"),
        (((codec.OPT_VENDOR_CLASS, b"PXEClient:Arch:00007:UNDI:003016"),), "snponly.efi"),
    ],
)
def test_architecture_selects_the_ipxe_binary(opts, expected):
    d = decide(request(codec.DISCOVER, opts=opts), config(), LeaseState(), 0.0)
    assert d.reply is not None and d.boot_file == expected
    assert d.reply.file.rstrip(b"\0") == expected.encode()
    assert d.reply.siaddr == SERVER
    assert d.reply.option(codec.OPT_BOOTFILE) == expected.encode()
    assert d.reply.option(codec.OPT_TFTP_SERVER) == b"10.20.0.2"


def test_efi_binary_is_configurable():
    cfg = config(efi_binary="ipxe.efi")
    d = decide(request(codec.DISCOVER, opts=(arch(7),)), cfg, LeaseState(), 0.0)
    assert d.boot_file == "ipxe.efi"
    with pytest.raises(InputError, match="efi_binary"):
        config(efi_binary="../evil.efi")


@pytest.mark.parametrize(("n", "binary"), [(16, "snponly.efi"), (19, "ipxe-arm64.efi")])
def test_uefi_http_boot_gets_a_url_and_httpclient_echo(n, binary):
    vc = (codec.OPT_VENDOR_CLASS, f"HTTPClient:Arch:{n:05d}:UNDI:003001".encode())
    d = decide(request(codec.DISCOVER, opts=(arch(n), vc)), config(), LeaseState(), 0.0)
    assert d.reply is not None
    assert d.boot_file == f"http://10.20.0.2:8080/tftp/{binary}"
    assert d.reply.option(codec.OPT_VENDOR_CLASS) == b"HTTPClient"
    assert d.reply.option(codec.OPT_TFTP_SERVER) is None


@pytest.mark.parametrize(
    "ipxe_marker",
    [(codec.OPT_USER_CLASS, b"iPXE"), (codec.OPT_IPXE_ENCAP, b"\x13\x01\x01")],
)
def test_ipxe_gets_the_per_mac_script_url(ipxe_marker):
    d = decide(
        request(codec.DISCOVER, opts=(arch(7), ipxe_marker)),
        config(http_port=8081),
        LeaseState(),
        0.0,
    )
    assert d.boot_file == "http://10.20.0.2:8081/ipxe/52-54-00-10-00-11.ipxe"


def test_unknown_architecture_gets_an_address_but_no_boot_file():
    d = decide(request(codec.DISCOVER, opts=(arch(10),)), config(), LeaseState(), 0.0)
    assert d.reply is not None and d.boot_file is None and d.reply.yiaddr == IP("10.20.0.11")


# ----------------------------------------------------------------------------- proxy mode


def test_proxy_offer_carries_boot_options_and_never_an_address():
    cfg = config("proxy")
    uuid = (codec.OPT_CLIENT_UUID, b"\x00" + bytes(range(16)))
    d = decide(request(codec.DISCOVER, opts=(arch(0), PXE_VC, uuid)), cfg, LeaseState(), 0.0)
    r = d.reply
    assert r is not None and d.event == "dhcp-offer"
    assert r.yiaddr == codec.ZERO
    assert r.option(codec.OPT_VENDOR_CLASS) == b"PXEClient"
    assert r.option(codec.OPT_VENDOR_SPECIFIC) == b"\x06\x01\x08\xff"
    assert r.server_id == SERVER and r.siaddr == SERVER
    assert r.file.rstrip(b"\0") == b"undionly.kpxe"
    assert r.option(codec.OPT_CLIENT_UUID) == uuid[1]
    assert r.lease_time is None and r.option(codec.OPT_ROUTER) is None


def test_proxy_answers_every_nic_of_a_node():
    d = decide(
        request(codec.DISCOVER, CP3_SECOND, opts=(arch(7),)), config("proxy"), LeaseState(), 0.0
    )
    assert d.reply is not None and d.reply.yiaddr == codec.ZERO and d.boot_file == "snponly.efi"


def test_proxy_ignores_non_pxe_clients_unknown_macs_and_requests_to_the_address_server():
    cfg, state = config("proxy"), LeaseState()
    assert decide(request(codec.DISCOVER), cfg, state, 0).reply is None  # plain DHCP client
    assert decide(request(codec.DISCOVER, STRANGER, opts=(arch(0),)), cfg, state, 0).reply is None
    d = decide(
        request(codec.REQUEST, opts=(arch(0), sid("10.20.0.1"), req_ip("10.20.0.150"))),
        cfg,
        state,
        0,
    )
    assert d.reply is None
    state.apply(d.update)
    assert state.mac_of("10.20.0.150") == CP1  # learnt for the phase table


def test_proxy_answers_requests_to_itself_on_67_and_anything_on_4011():
    cfg = config("proxy")
    d = decide(request(codec.REQUEST, opts=(arch(7), sid())), cfg, LeaseState(), 0)
    assert d.event == "dhcp-ack" and d.reply is not None and d.reply.yiaddr == codec.ZERO
    d = decide(
        request(codec.REQUEST, ciaddr="10.20.0.150", opts=(arch(7), PXE_VC)),
        cfg,
        LeaseState(),
        0,
        via=PXE_PORT,
        source=("10.20.0.150", 68),
    )
    assert d.event == "dhcp-ack" and d.dest == ("10.20.0.150", 68)
    assert d.reply is not None and d.reply.yiaddr == codec.ZERO
    assert d.reply.file.rstrip(b"\0") == b"snponly.efi"


def test_full_mode_does_not_answer_4011():
    d = decide(request(codec.REQUEST, opts=(arch(7),)), config(), LeaseState(), 0, via=PXE_PORT)
    assert d.reply is None


def test_replies_and_non_ethernet_are_ignored():
    reply = decode(
        encode(DhcpMessage(op=codec.BOOTREPLY, xid=1, options=((codec.OPT_MESSAGE_TYPE, b"\x02"),)))
    )
    assert decide(reply, config(), LeaseState(), 0).reply is None
    tokenring = DhcpMessage(op=1, xid=1, htype=6, options=((codec.OPT_MESSAGE_TYPE, b"\x01"),))
    assert decide(tokenring, config(), LeaseState(), 0).reply is None


def test_config_needs_a_boot_server():
    inv = inventory()
    net = inv.network.model_copy(update={"boot_server": None})
    with pytest.raises(InputError, match=r"network\.bootServer"):
        dhcp_config_from_inventory(inv.model_copy(update={"network": net}))


def test_binding_an_early_offer_does_not_rewind_the_allocation_cursor():
    # regression: a REQUEST for an older offer used to move the search back over every
    # outstanding offer (O(n) per DISCOVER; the bench collapsed at 1,000 exchanges/s)
    cfg, state = config(with_range=True), LeaseState()
    macs = ["02:00:00:00:00:01", "02:00:00:00:00:02"]
    for mac in macs:
        state.apply(decide(request(codec.DISCOVER, mac), cfg, state, 0.0).update)
    cursor = state.cursor
    ack = decide(
        request(codec.REQUEST, macs[0], opts=(sid(), req_ip("10.20.0.200"))), cfg, state, 1
    )
    state.apply(ack.update)
    assert ack.event == "dhcp-ack" and state.cursor == cursor == int(IP("10.20.0.201")) + 1
