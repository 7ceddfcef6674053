"""Who gets what: the DHCP server's decisions (sans-IO).

``decide(msg, cfg, state, now, via=67, source=...) -> Decision`` is a pure function: it reads the
lease state and returns the reply to send (if any), where to send it, the lease change to apply
(``LeaseState.apply``) and the event to report. Nothing here touches sockets or clocks.

Rules (RFC 2131, DESIGN #5/#6):
- full mode answers inventory MACs with their reserved address, and other MACs only from a
  dynamic range the inventory declares; unknown MACs without a range get no answer at all.
- proxy mode never assigns an address (yiaddr 0) and answers only PXE/iPXE clients among the
  inventory MACs, with boot options (60 PXEClient, 43 sub-option 6 = 8, 54, siaddr, bootfile),
  on :67 and on :4011.
- replies go to the relay (giaddr:67) when relayed, else to ciaddr:68 when set, else broadcast;
  NAKs are broadcast; :4011 replies go back to the sender.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from . import codec
from .codec import DhcpMessage
from .config import (
    ARCH_BIOS,
    ARCH_EFI_ARM64,
    ARCH_EFI_X86,
    ARCH_HTTP_ARM64,
    ARCH_HTTP_X64,
    DhcpConfig,
)

IPv4 = ipaddress.IPv4Address
BROADCAST = IPv4("255.255.255.255")
_BROADCAST_STR = str(BROADCAST)
SERVER_PORT, CLIENT_PORT, PXE_PORT = 67, 68, 4011
PXE_VENDOR_OPTIONS = b"\x06\x01\x08\xff"  # sub-option 6 (discovery control) = 8: use this offer


# --------------------------------------------------------------------------- lease state


@dataclass
class Lease:
    mac: str
    ip: IPv4
    expires: float
    bound: bool


@dataclass(frozen=True)
class LeaseUpdate:
    action: Literal["offer", "bind", "release", "decline", "learn"]
    mac: str
    ip: IPv4
    until: float = 0.0


@dataclass
class LeaseState:
    """Leases and address knowledge of one server. Mutated only through ``apply``."""

    leases: dict[str, Lease] = field(default_factory=dict)
    by_ip: dict[IPv4, str] = field(default_factory=dict)
    declined: dict[IPv4, float] = field(default_factory=dict)
    seen: dict[str, IPv4] = field(default_factory=dict)
    """MAC -> address last known for it (assigned by us, or seen requested from another server)."""
    cursor: int = 0

    def apply(self, update: LeaseUpdate | None) -> None:
        if update is None:
            return
        mac, ip = update.mac, update.ip
        if update.action in ("offer", "bind"):
            old = self.leases.get(mac)
            if old is not None and old.ip != ip:
                self.by_ip.pop(old.ip, None)
            self.leases[mac] = Lease(mac, ip, update.until, update.action == "bind")
            self.by_ip[ip] = mac
            self.seen[mac] = ip
            if update.action == "offer":
                self.cursor = int(ip) + 1  # next search starts after the newest offer
        elif update.action == "release":
            lease = self.leases.get(mac)
            if lease is not None and lease.ip == ip:
                del self.leases[mac]
                if self.by_ip.get(ip) == mac:
                    del self.by_ip[ip]
        elif update.action == "decline":
            self.declined[ip] = update.until
            lease = self.leases.get(mac)
            if lease is not None and lease.ip == ip:
                del self.leases[mac]
                self.by_ip.pop(ip, None)
        elif update.action == "learn":
            self.seen[mac] = ip

    def mac_of(self, ip: IPv4 | str) -> str | None:
        """MAC the given address belongs to, as far as this server knows."""
        addr = IPv4(ip)
        mac = self.by_ip.get(addr)
        if mac is not None:
            return mac
        for m, seen_ip in self.seen.items():
            if seen_ip == addr:
                return m
        return None


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Decision:
    reply: DhcpMessage | None
    dest: tuple[str, int] | None
    event: str | None
    """BootEvent kind to report ("dhcp-offer", "dhcp-ack", "dhcp-nak", ...), None if silent."""
    mac: str | None
    reason: str
    update: LeaseUpdate | None = None
    boot_file: str | None = None


def _ignore(msg: DhcpMessage | None, reason: str, update: LeaseUpdate | None = None) -> Decision:
    return Decision(None, None, None, msg.mac if msg else None, reason, update)


@dataclass(frozen=True)
class BootChoice:
    file: str
    http_client: bool


def boot_choice(msg: DhcpMessage, cfg: DhcpConfig) -> BootChoice | None:
    """Boot file for a PXE/iPXE client (DESIGN #6), None for a client that does not netboot."""
    option = msg.option
    if (
        option(codec.OPT_VENDOR_CLASS) is None
        and option(codec.OPT_CLIENT_ARCH) is None
        and option(codec.OPT_USER_CLASS) is None
        and option(codec.OPT_IPXE_ENCAP) is None
    ):
        return None  # neither PXE nor iPXE (every test below needs one of these options)
    mac = msg.mac
    if mac is not None and msg.is_ipxe:
        return BootChoice(cfg.script_url(mac), http_client=False)
    arches = msg.client_arch
    if not arches and not msg.is_pxe:
        return None
    arch = arches[0] if arches else ARCH_BIOS
    if msg.is_http_client or arch in (ARCH_HTTP_X64, ARCH_HTTP_ARM64):
        binary = cfg.arm64_binary if arch == ARCH_HTTP_ARM64 else cfg.efi_binary
        if arch not in (ARCH_HTTP_X64, ARCH_HTTP_ARM64):
            return None
        return BootChoice(f"{cfg.http_base}/tftp/{binary}", http_client=True)
    if arch == ARCH_BIOS:
        return BootChoice(cfg.bios_binary, http_client=False)
    if arch in ARCH_EFI_X86:
        return BootChoice(cfg.efi_binary, http_client=False)
    if arch == ARCH_EFI_ARM64:
        return BootChoice(cfg.arm64_binary, http_client=False)
    return None


def _ip_bytes(*ips: IPv4) -> bytes:
    return b"".join(ip.packed for ip in ips)


def _u32(v: int) -> bytes:
    return int(v).to_bytes(4, "big")


@dataclass(frozen=True)
class _Wire:
    """Reply pieces that depend only on the config, built once per config (``_wire``)."""

    server_id: bytes
    tftp_server: bytes
    lease_options: tuple[tuple[int, bytes], ...]
    """51, 58, 59: lease, renewal and rebinding times."""
    net_options: tuple[tuple[int, bytes], ...]
    """1, 28, 3, 6, 42: mask, broadcast, router, DNS, NTP (those the config has)."""
    taken: frozenset[int]
    """Addresses (as ints) never handed out dynamically: reservations, the server, the router."""


def _wire(cfg: DhcpConfig) -> _Wire:
    # cached beside the frozen config's fields (DhcpConfig holds a dict: not hashable)
    wire: _Wire | None = cfg.__dict__.get("_policy_wire")
    if wire is not None:
        return wire
    t = cfg.lease_time
    net: list[tuple[int, bytes]] = [
        (codec.OPT_SUBNET_MASK, cfg.subnet.netmask.packed),
        (codec.OPT_BROADCAST, cfg.subnet.broadcast_address.packed),
    ]
    if cfg.router is not None:
        net.append((codec.OPT_ROUTER, cfg.router.packed))
    if cfg.dns:
        net.append((codec.OPT_DNS, _ip_bytes(*cfg.dns)))
    if cfg.ntp:
        net.append((codec.OPT_NTP, _ip_bytes(*cfg.ntp)))
    taken = {r.ip for r in cfg.reservations.values()}
    taken.add(cfg.server_ip)
    if cfg.router is not None:
        taken.add(cfg.router)
    wire = _Wire(
        server_id=cfg.server_ip.packed,
        tftp_server=str(cfg.server_ip).encode(),
        lease_options=(
            (codec.OPT_LEASE_TIME, _u32(t)),
            (codec.OPT_RENEWAL_TIME, _u32(t // 2)),
            (codec.OPT_REBINDING_TIME, _u32(t * 7 // 8)),
        ),
        net_options=tuple(net),
        taken=frozenset(int(ip) for ip in taken),
    )
    cfg.__dict__["_policy_wire"] = wire
    return wire


_MESSAGE_TYPE_OPTIONS = {t: (codec.OPT_MESSAGE_TYPE, bytes([t])) for t in codec.MESSAGE_TYPES}


def _reply(
    msg: DhcpMessage,
    cfg: DhcpConfig,
    mtype: int,
    *,
    yiaddr: IPv4 = codec.ZERO,
    options: list[tuple[int, bytes]],
    boot: BootChoice | None = None,
    broadcast: bool | None = None,
) -> DhcpMessage:
    wire = _wire(cfg)
    opts: list[tuple[int, bytes]] = [
        _MESSAGE_TYPE_OPTIONS[mtype],
        (codec.OPT_SERVER_ID, wire.server_id),
        *options,
    ]
    siaddr = codec.ZERO
    file = b""
    if boot is not None:
        siaddr = cfg.server_ip
        raw = boot.file.encode()
        if len(raw) < 128:
            file = raw
        if not boot.http_client:
            opts.append((codec.OPT_TFTP_SERVER, wire.tftp_server))
        opts.append((codec.OPT_BOOTFILE, raw))
    flags = msg.flags
    if broadcast is not None:
        flags = (flags | codec.BROADCAST_FLAG) if broadcast else flags
    return codec.trusted_message(
        op=codec.BOOTREPLY,
        xid=msg.xid,
        htype=msg.htype,
        hlen=msg.hlen,
        flags=flags,
        ciaddr=msg.ciaddr if mtype != codec.NAK else codec.ZERO,
        yiaddr=yiaddr,
        siaddr=siaddr,
        giaddr=msg.giaddr,
        chaddr=msg.chaddr,
        file=file,
        options=tuple(opts),
    )


def _address_options(
    cfg: DhcpConfig, hostname: str | None, *, lease: bool = True
) -> list[tuple[int, bytes]]:
    wire = _wire(cfg)
    opts = [*wire.lease_options, *wire.net_options] if lease else [*wire.net_options]
    if hostname:
        opts.append((codec.OPT_HOSTNAME, hostname.encode()))
    return opts


def _boot_options(
    msg: DhcpMessage, boot: BootChoice | None, proxy: bool
) -> list[tuple[int, bytes]]:
    if boot is None:
        return []
    opts: list[tuple[int, bytes]] = []
    if boot.http_client:
        opts.append((codec.OPT_VENDOR_CLASS, b"HTTPClient"))
    elif proxy:
        opts.append((codec.OPT_VENDOR_CLASS, b"PXEClient"))
    if proxy and not boot.http_client:
        opts.append((codec.OPT_VENDOR_SPECIFIC, PXE_VENDOR_OPTIONS))
    uuid = msg.option(codec.OPT_CLIENT_UUID)
    if proxy and uuid is not None:
        opts.append((codec.OPT_CLIENT_UUID, uuid))
    return opts


def _set(ip: IPv4) -> bool:
    """``ip`` is not 0.0.0.0 (decoded zeros are the ``codec.ZERO`` object: no comparison)."""
    return ip is not codec.ZERO and ip != codec.ZERO


def _destination(msg: DhcpMessage, mtype: int) -> tuple[str, int]:
    if _set(msg.giaddr):
        return str(msg.giaddr), SERVER_PORT
    if mtype == codec.NAK:
        return _BROADCAST_STR, CLIENT_PORT
    if _set(msg.ciaddr):
        return str(msg.ciaddr), CLIENT_PORT
    return _BROADCAST_STR, CLIENT_PORT


# --------------------------------------------------------------------------- full mode


def _binding(
    mac: str, cfg: DhcpConfig, state: LeaseState, now: float
) -> tuple[IPv4 | None, str | None]:
    """The address this server has for ``mac`` (reservation or live dynamic lease)."""
    res = cfg.reservations.get(mac)
    if res is not None:
        return res.ip, res.hostname
    lease = state.leases.get(mac)
    if lease is not None and state.by_ip.get(lease.ip) == mac and cfg.in_range(lease.ip):
        return lease.ip, None  # live, or expired but not handed to anyone else since
    return None, None


def _reserved_ips(cfg: DhcpConfig) -> frozenset[int]:
    return _wire(cfg).taken


def _free(
    ip: IPv4, mac: str, cfg: DhcpConfig, state: LeaseState, now: float, taken: frozenset[int]
) -> bool:
    n = int(ip)
    lo, hi = cfg.range_ints
    if not lo <= n <= hi or n in taken:
        return False
    if state.declined and state.declined.get(ip, 0.0) > now:
        return False
    holder = state.by_ip.get(ip)
    if holder is None or holder == mac:
        return True
    lease = state.leases.get(holder)
    return lease is None or lease.expires <= now


def _allocate(
    msg: DhcpMessage, mac: str, cfg: DhcpConfig, state: LeaseState, now: float
) -> IPv4 | None:
    assert cfg.dynamic_range is not None
    taken = _reserved_ips(cfg)
    lease = state.leases.get(mac)
    if lease is not None and _free(lease.ip, mac, cfg, state, now, taken):
        return lease.ip
    req = msg.requested_ip
    if req is not None and _free(req, mac, cfg, state, now, taken):
        return req
    lo, hi = cfg.range_ints
    size = hi - lo + 1
    start = state.cursor if lo <= state.cursor <= hi else lo
    for i in range(size):
        ip = IPv4(lo + (start - lo + i) % size)
        if _free(ip, mac, cfg, state, now, taken):
            return ip
    return None


def _server_id(msg: DhcpMessage, cfg: DhcpConfig) -> IPv4 | None:
    """``msg.server_id``; ``cfg.server_ip`` itself when it names this server (no new object)."""
    if msg.option(codec.OPT_SERVER_ID) == _wire(cfg).server_id:
        return cfg.server_ip
    return msg.server_id


def _known(mac: str, cfg: DhcpConfig) -> bool:
    return mac in cfg.reservations or cfg.dynamic_range is not None


def _full(msg: DhcpMessage, mac: str, cfg: DhcpConfig, state: LeaseState, now: float) -> Decision:
    mtype = msg.message_type
    if not _known(mac, cfg):
        return _ignore(msg, "unknown MAC (not in the inventory, no dynamic range)")
    if _set(msg.giaddr) and msg.giaddr not in cfg.subnet:
        return _ignore(msg, f"relayed from {msg.giaddr}, outside {cfg.subnet}")
    bound_ip, hostname = _binding(mac, cfg, state, now)
    boot = boot_choice(msg, cfg)
    lease_until = now + cfg.lease_time

    if mtype == codec.DISCOVER:
        ip = bound_ip
        update = None
        if mac not in cfg.reservations:
            ip = _allocate(msg, mac, cfg, state, now)
            if ip is None:
                return _ignore(msg, "dynamic range exhausted")
            update = LeaseUpdate("offer", mac, ip, now + cfg.offer_hold)
        assert ip is not None
        if mac in cfg.reservations:
            update = LeaseUpdate("offer", mac, ip, now + cfg.offer_hold)
        reply = _reply(
            msg,
            cfg,
            codec.OFFER,
            yiaddr=ip,
            options=_address_options(cfg, hostname) + _boot_options(msg, boot, proxy=False),
            boot=boot,
        )
        return Decision(
            reply,
            _destination(msg, codec.OFFER),
            "dhcp-offer",
            mac,
            f"offer {ip}",
            update,
            boot.file if boot else None,
        )

    if mtype == codec.REQUEST:
        sid, req, ci = _server_id(msg, cfg), msg.requested_ip, msg.ciaddr
        if sid is not None and sid is not cfg.server_ip and sid != cfg.server_ip:
            lease = state.leases.get(mac)
            if lease is not None and not lease.bound:
                return _ignore(
                    msg, f"client chose server {sid}", LeaseUpdate("release", mac, lease.ip)
                )
            return _ignore(msg, f"client chose server {sid}")
        if sid is not None:  # SELECTING: answering our offer
            target = req if req is not None else (ci if ci != codec.ZERO else None)
            if bound_ip is None and target is not None and mac not in cfg.reservations:
                taken = _reserved_ips(cfg)
                if _free(target, mac, cfg, state, now, taken):
                    bound_ip = target
        elif req is not None:  # INIT-REBOOT
            target = req
            if bound_ip is None:
                return _ignore(msg, "INIT-REBOOT from a client without a binding here")
        elif ci != codec.ZERO:  # RENEWING / REBINDING
            target = ci
            if bound_ip is None:
                return _ignore(msg, "renewal from a client without a binding here")
        else:
            return _ignore(msg, "REQUEST without server id, requested address or ciaddr")
        if target is None or bound_ip is None or target != bound_ip:
            why = (
                f"requested {target}, bound to {bound_ip}"
                if bound_ip
                else f"{target} not available"
            )
            nak = _reply(
                msg,
                cfg,
                codec.NAK,
                options=[(codec.OPT_MESSAGE, why.encode())],
                broadcast=msg.giaddr != codec.ZERO,
            )
            return Decision(nak, _destination(msg, codec.NAK), "dhcp-nak", mac, f"nak: {why}")
        reply = _reply(
            msg,
            cfg,
            codec.ACK,
            yiaddr=bound_ip,
            options=_address_options(cfg, hostname) + _boot_options(msg, boot, proxy=False),
            boot=boot,
        )
        return Decision(
            reply,
            _destination(msg, codec.ACK),
            "dhcp-ack",
            mac,
            f"ack {bound_ip}",
            LeaseUpdate("bind", mac, bound_ip, lease_until),
            boot.file if boot else None,
        )

    if mtype == codec.RELEASE:
        if msg.server_id not in (None, cfg.server_ip):
            return _ignore(msg, "RELEASE for another server")
        lease = state.leases.get(mac)
        if lease is None or lease.ip != msg.ciaddr:
            return _ignore(msg, f"RELEASE of {msg.ciaddr}, not leased to {mac}")
        return Decision(
            None,
            None,
            "dhcp-release",
            mac,
            f"released {msg.ciaddr}",
            LeaseUpdate("release", mac, msg.ciaddr),
        )

    if mtype == codec.DECLINE:
        if msg.server_id not in (None, cfg.server_ip):
            return _ignore(msg, "DECLINE for another server")
        ip = msg.requested_ip
        if ip is None or ip not in cfg.subnet:
            return _ignore(msg, "DECLINE without a requested address in our subnet")
        note = f"{ip} is in use by another host"
        if mac in cfg.reservations:
            note += f" (reserved for {cfg.reservations[mac].hostname}: fix the address conflict)"
        return Decision(
            None, None, "dhcp-decline", mac, note, LeaseUpdate("decline", mac, ip, lease_until)
        )

    if mtype == codec.INFORM:
        reply = _reply(
            msg,
            cfg,
            codec.ACK,
            options=_address_options(cfg, hostname, lease=False)
            + _boot_options(msg, boot, proxy=False),
            boot=boot,
        )
        return Decision(
            reply,
            _destination(msg, codec.ACK),
            "dhcp-ack",
            mac,
            "inform",
            None,
            boot.file if boot else None,
        )

    return _ignore(msg, f"{msg.type_name} is not handled by a server")


# --------------------------------------------------------------------------- proxy mode


def _proxy(
    msg: DhcpMessage, mac: str, cfg: DhcpConfig, via: int, source: tuple[str, int]
) -> Decision:
    mtype = msg.message_type
    learn = None
    if mtype == codec.REQUEST and msg.requested_ip is not None:
        learn = LeaseUpdate("learn", mac, msg.requested_ip)
    elif msg.ciaddr != codec.ZERO:
        learn = LeaseUpdate("learn", mac, msg.ciaddr)
    if not cfg.is_node_mac(mac):
        return _ignore(msg, "unknown MAC (proxy mode answers inventory MACs only)")
    boot = boot_choice(msg, cfg)
    if boot is None:
        return _ignore(msg, "not a PXE/iPXE client", learn)
    if via == PXE_PORT:
        if mtype not in (codec.REQUEST, codec.INFORM, codec.DISCOVER):
            return _ignore(msg, f"{msg.type_name} on :{PXE_PORT}", learn)
        reply_type = codec.ACK
        dest = (str(msg.giaddr), SERVER_PORT) if msg.giaddr != codec.ZERO else source
    elif mtype == codec.DISCOVER:
        reply_type = codec.OFFER
        dest = _destination(msg, codec.OFFER)
    elif mtype == codec.REQUEST and msg.server_id == cfg.server_ip:
        reply_type = codec.ACK
        dest = _destination(msg, codec.ACK)
    else:
        return _ignore(msg, f"{msg.type_name} for the address server", learn)
    reply = _reply(msg, cfg, reply_type, options=_boot_options(msg, boot, proxy=True), boot=boot)
    kind = "dhcp-offer" if reply_type == codec.OFFER else "dhcp-ack"
    return Decision(reply, dest, kind, mac, f"proxy {kind[5:]} via :{via}", learn, boot.file)


# --------------------------------------------------------------------------- entry point


def decide(
    msg: DhcpMessage,
    cfg: DhcpConfig,
    state: LeaseState,
    now: float,
    *,
    via: int = SERVER_PORT,
    source: tuple[str, int] = ("0.0.0.0", CLIENT_PORT),
) -> Decision:
    """The server's answer to ``msg`` received on local port ``via`` from ``source``."""
    if msg.op != codec.BOOTREQUEST:
        return _ignore(msg, "not a BOOTREQUEST")
    mac = msg.mac
    if mac is None:
        return _ignore(msg, f"hardware type {msg.htype}/{msg.hlen} is not Ethernet")
    if msg.message_type is None:
        return _ignore(msg, "plain BOOTP (no DHCP message type) is not served")
    if msg.hops > 16:
        return _ignore(msg, f"{msg.hops} relay hops")
    if cfg.mode == "proxy":
        return _proxy(msg, mac, cfg, via, source)
    if via == PXE_PORT:
        return _ignore(msg, f"full mode does not serve :{PXE_PORT}")
    return _full(msg, mac, cfg, state, now)
