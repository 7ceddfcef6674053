"""One emulated Talos node: the real gRPC services over real (Ed25519) TLS.

Life cycle (as on metal, DESIGN.md #10):

``maintenance``  apid on the node's DHCP address, self-signed Ed25519 certificate from a
                 "maintenance root" CA, no client certificate asked for; readers may call
                 Version (v1.13+), storage.Disks, COSI Get/List and ApplyConfiguration.
``installing``   after a valid ApplyConfiguration: the install disk is resolved on the
                 node's disks (failure: back to maintenance, reason in MachineStatus).
(reboot)         the listener is closed for ``reboot_delay`` seconds.
``running``      apid on the addresses the config assigns, certificate issued by the config's
                 OS CA (``machine.ca``; workers get theirs from a control plane, like trustd),
                 mutual TLS: client certificates must chain to that CA, carry ExtKeyUsage
                 ClientAuth only, and O=os:admin for admin calls (O=os:reader for reads).

Errors use the codes and messages Talos uses (see reference/talos-api.md §2, §6).
Faults are injected through :class:`Faults`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import difflib
import gzip
import hashlib
import io
import ipaddress
import os
import ssl
import tarfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server, Stream

from ..secrets.pki import CertAndKey, issue_cert, load_private_key, new_ca, new_ed25519, new_p256
from ..talos.client import DiskInfo
from ..talos.disks import resolve_config_install_disk
from ..talos.proto import (
    common_pb2,
    cosi_resource_grpc,
    cosi_resource_pb2,
    machine_grpc,
    machine_pb2,
    storage_grpc,
    storage_pb2,
)
from ..util.images import tag_of
from .talos_hw import AppliedConfig, Link, runtime_problems

if TYPE_CHECKING:
    from .talos_rack import Rack

ApplyMode = machine_pb2.ApplyConfigurationRequest.Mode

ADMIN = "os:admin"
SENSITIVE = frozenset({"MachineConfigs.config.talos.dev"})
"""COSI types only os:admin may read."""
READER = "os:reader"


@dataclass
class Faults:
    """Per-node fault injection (all off by default)."""

    unreachable: bool = False
    """No listener at all: connections are refused."""
    slow: float = 0.0
    """Seconds every call waits before it is answered."""
    apply_fails: str | None = None
    """ApplyConfiguration answers Internal with this message."""
    upgrade_rollback: bool = False
    """An upgrade 'fails to boot' and the node comes back on its old version."""
    etcd_error: str | None = None
    """The node's etcd member reports this error in EtcdStatus (unhealthy member)."""


@dataclass
class NodeState:
    stage: str = "maintenance"
    version: str = "v1.13.9"
    config: AppliedConfig | None = None
    etcd_member_id: int | None = None
    """Set when the node has etcd data (bootstrapped or joined)."""
    etcd_cluster: int | None = None
    last_error: str = ""
    bootstrap_calls: int = 0
    """Bootstrap calls that created an etcd cluster on this node."""
    bootstrap_rpcs: int = 0
    """Bootstrap calls received at all (including refused ones)."""
    apply_calls: int = 0
    addresses: tuple[str, ...] = ()
    """Addresses apid listens on right now."""
    history: list[str] = field(default_factory=list)
    boot_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    image: str = ""
    """Installer image the running system came from (install: the config's
    ``machine.install.image``; upgrade: the image asked for, unless it rolled back)."""
    upgrades: int = 0
    """Upgrade RPCs accepted."""
    resets: int = 0
    on_change: Callable[[], None] | None = field(default=None, compare=False, repr=False)
    """Called after any field is assigned (the rack process wakes up to reconcile)."""

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        notify = self.__dict__.get("on_change")
        if notify is not None and name != "on_change":
            notify()


class RawSpec(str):
    """A COSI spec sent as it is (the MachineConfig resource carries the config document
    text, not a YAML mapping)."""


def _minor(version: str) -> tuple[int, int]:
    major, minor, *_ = version.lstrip("v").split(".")
    return int(major), int(minor)


class EmulatedNode:
    """A Talos node; its servers live on the rack's event loop."""

    def __init__(
        self,
        rack: Rack,
        name: str,
        *,
        macs: list[str],
        links: list[Link],
        disks: list[DiskInfo],
        dhcp_address: str,
        talos_version: str,
        faults: Faults | None = None,
    ) -> None:
        self.rack = rack
        self.name = name
        self.macs = [m.lower() for m in macs]
        self.links = links
        self.disks = disks
        self.dhcp_address = dhcp_address
        self.faults = faults or Faults()
        self.state = NodeState(version=talos_version)
        self._servers: list[_TrackingServer] = []
        self._vip_servers: dict[str, _TrackingServer] = {}
        self._ssl: ssl.SSLContext | None = None
        self._task: asyncio.Task[None] | None = None
        self._validated: tuple[str, AppliedConfig] | None = None
        self._maintenance_ca = new_ca(new_ed25519(), organization="talos maintenance")

    # ------------------------------------------------------------------ helpers

    def _log(self, event: str) -> None:
        self.state.history.append(event)

    @property
    def stage(self) -> str:
        return self.state.stage

    @property
    def config(self) -> AppliedConfig | None:
        return self.state.config

    def etcd_members(self) -> list[tuple[int, str, str]]:
        return self.rack.etcd_members(self)

    # ------------------------------------------------------------------ TLS

    def _write_pair(self, pair: CertAndKey, label: str) -> Path:
        assert pair.key is not None
        key_pem = load_private_key(pair.key).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path = self.rack.workdir / f"{self.name}-{label}.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pair.crt + b"\n" + key_pem)
        return path

    def _server_ssl(self, addresses: tuple[str, ...]) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.set_alpn_protocols(["h2"])
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        sans = tuple(dict.fromkeys((*addresses, *self._socket_hosts(addresses))))
        cfg = self.state.config
        if self.state.stage == "maintenance" or cfg is None:
            pair = issue_cert(self._maintenance_ca, new_ed25519(), client=False, server=True,
                              ip_addresses=sans)
            ctx.load_cert_chain(self._write_pair(pair, "maintenance"))
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        ca = self.rack.os_ca_for(cfg)
        assert ca is not None and cfg.os_ca_crt is not None
        dns = tuple(s for s in (cfg.hostname or self.name, *cfg.cert_sans) if not _is_ip(s))
        ips = tuple(dict.fromkeys((*sans, *(s for s in cfg.cert_sans if _is_ip(s)))))
        key = load_private_key(ca.key) if ca.key else new_ed25519()
        from ..secrets.pki import same_key_type

        pair = issue_cert(ca, same_key_type(key), client=False, server=True,
                          common_name=cfg.hostname or self.name, dns_names=dns, ip_addresses=ips)
        ctx.load_cert_chain(self._write_pair(pair, "apid"))
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=cfg.os_ca_crt.decode("ascii"))
        return ctx

    def _socket_hosts(self, addresses: tuple[str, ...]) -> list[str]:
        return [self.rack.socket_host(a) for a in addresses]

    # ------------------------------------------------------------------ listeners

    async def start(self) -> None:
        """Power on: maintenance mode on the DHCP address (or running, if installed)."""
        if self.state.stage in ("maintenance", "installing"):
            self.state.stage = "maintenance"
            await self._listen((self.dhcp_address,))
        else:
            await self._listen(self.state.addresses)

    async def _listen(self, addresses: tuple[str, ...]) -> None:
        await self._close_servers()
        self.state.addresses = addresses
        if self.faults.unreachable or not addresses:
            return
        ctx = self._ssl = self._server_ssl(addresses)
        for host in dict.fromkeys(self._socket_hosts(addresses)):
            server = self._new_server()
            await server.start(host, self.rack.port, ssl=ctx, reuse_address=True)
            self._servers.append(server)

    def _new_server(self) -> _TrackingServer:
        return _TrackingServer([_MachineService(self), _StorageService(self), _StateService(self)])

    @property
    def held_vips(self) -> tuple[str, ...]:
        return tuple(self._vip_servers)

    async def hold_vip(self, vip: str) -> None:
        """Answer on the shared address too (this node won the VIP election)."""
        if vip in self._vip_servers or self._ssl is None or self.faults.unreachable:
            return
        server = self._new_server()
        await server.start(self.rack.socket_host(vip), self.rack.port, ssl=self._ssl,
                           reuse_address=True)
        self._vip_servers[vip] = server
        self._log(f"holds VIP {vip}")

    async def _close_servers(self) -> None:
        vips = list(self._vip_servers.values())
        self._vip_servers.clear()
        servers, self._servers = [*self._servers, *vips], []
        for s in servers:
            s.close()
            s.drop_connections()
        for s in servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(s.wait_closed(), 2)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._close_servers()

    def _spawn(self, coro: Any) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = asyncio.get_running_loop().create_task(coro)

    async def _reboot_into(self, stage_after: str) -> None:
        self.state.stage = "rebooting"
        self._log("reboot")
        await self._close_servers()
        self.rack.schedule_vip_election()
        await asyncio.sleep(self.rack.reboot_delay)
        self.state.stage = "booting"
        self.state.boot_id = str(uuid.uuid4())
        addresses = self._running_addresses()
        # Workers obtain their apid certificate from a control plane (trustd) and wait for one.
        while self.rack.os_ca_for(self.state.config) is None:
            await asyncio.sleep(0.05)
        self.state.stage = stage_after
        await self._listen(addresses)
        self._log(f"up {stage_after} on {','.join(addresses) or '(no address)'}")
        if stage_after == "running" and self.state.config and self.state.config.is_controlplane:
            self.rack.schedule_etcd_join()
            self.rack.schedule_vip_election()

    def _running_addresses(self) -> tuple[str, ...]:
        cfg = self.state.config
        assert cfg is not None
        missing = [m for m in cfg.selected_macs if m not in self.macs]
        if missing:
            # Talos accepts such a config; its link selectors match nothing here, so the
            # static addresses are never configured and the node keeps only DHCP on its NICs.
            self.state.last_error = (
                f"network config selects link(s) {', '.join(missing)} not present on this node "
                f"(links: {', '.join(f'{lk.name}={lk.mac}' for lk in self.links)})"
            )
            return (self.dhcp_address,) if self.dhcp_address not in cfg.addresses else ()
        return cfg.addresses or (self.dhcp_address,)

    async def _install(self, cfg: AppliedConfig) -> None:
        self.state.stage = "installing"
        await asyncio.sleep(self.rack.install_delay)
        disk = resolve_config_install_disk(cfg.install, self.disks)
        if disk is None:
            self.state.last_error = (
                f"install failed: no disk matches machine.install {cfg.install!r}"
            )
            self.state.config = None
            self.state.stage = "maintenance"
            self._log("install failed")
            return
        self._log(f"installed on {disk.device_name}")
        self.state.image = str(cfg.install.get("image") or "")
        await self._reboot_into("running")

    async def _upgrade(self, new_version: str, image: str) -> None:
        self.state.stage = "upgrading"
        await asyncio.sleep(self.rack.install_delay)
        if not self.faults.upgrade_rollback:
            self.state.version = new_version
            self.state.image = image
            self._log(f"upgraded to {image}")
        else:
            self._log(f"upgrade to {new_version} failed to boot: rolled back")
        await self._reboot_into("running")

    async def _reset(self, reboot: bool) -> None:
        """Wipe the system disk: no config, no etcd data; then maintenance or powered off."""
        self.state.stage = "resetting"
        self._log("reset")
        await asyncio.sleep(self.rack.install_delay)
        self.state.config = None
        self.state.etcd_member_id = None
        self.state.etcd_cluster = None
        self.state.image = ""
        self.state.last_error = ""
        if reboot:
            await self._reboot_into("maintenance")
            return
        await self._close_servers()
        self.rack.schedule_vip_election()
        self.state.stage = "off"
        self.state.boot_id = str(uuid.uuid4())
        self._log("powered off after reset")

    # ------------------------------------------------------------------ resources

    def resources(self, namespace: str, type_: str) -> dict[str, Any]:
        if (namespace, type_) == ("runtime", "MachineStatuses.runtime.talos.dev"):
            unmet = [{"name": "config", "reason": self.state.last_error}] \
                if self.state.last_error else []
            ready = self.state.stage == "running" and not unmet
            return {"machine": {"stage": self.state.stage,
                                "status": {"ready": ready, "unmetConditions": unmet}}}
        if (namespace, type_) == ("network", "LinkStatuses.net.talos.dev"):
            return {lk.name: {"index": i + 1, "type": "ether", "kind": "", "hardwareAddr": lk.mac,
                              "permanentAddr": lk.mac, "linkState": True,
                              "operationalState": "up", "mtu": 1500}
                    for i, lk in enumerate(self.links)}
        if (namespace, type_) == ("network", "AddressStatuses.net.talos.dev"):
            link = self.links[0].name if self.links else "eth0"
            return {f"{link}/{a}/24": {"address": f"{a}/24", "linkName": link, "family": "inet4",
                                       "scope": "global"} for a in self.state.addresses}
        if (namespace, type_) == ("runtime", "Disks.block.talos.dev"):
            return {d.device_name.removeprefix("/dev/"): {
                "devPath": d.device_name, "size": d.size, "model": d.model, "serial": d.serial,
                "wwid": d.wwid, "busPath": d.bus_path, "modalias": d.modalias,
                "rotational": d.type == "HDD", "cdrom": d.type == "CD", "readonly": d.readonly,
                "transport": "nvme" if d.type == "NVME" else "sata"} for d in self.disks}
        if (namespace, type_) == ("config", "MachineTypes.config.talos.dev"):
            mt = self.state.config.machine_type if self.state.config else "unknown"
            return {"machine-type": mt}  # type: ignore[dict-item]
        if (namespace, type_) == ("config", "MachineConfigs.config.talos.dev"):
            return {"v1alpha1": RawSpec(self.state.config.text)} if self.state.config else {}
        if (namespace, type_) == ("runtime", "Versions.runtime.talos.dev"):
            return {"version": {"version": self.state.version}}
        return {}


def _is_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False


class _TrackingServer(Server):
    """grpclib Server that can also drop established connections (a reboot cuts them)."""

    def __init__(self, handlers: list[Any]) -> None:
        super().__init__(handlers)
        self._protocols: list[Any] = []

    def _protocol_factory(self) -> Any:
        proto = super()._protocol_factory()
        self._protocols.append(proto)
        return proto

    def drop_connections(self) -> None:
        for proto in self._protocols:
            conn = getattr(proto, "connection", None)
            transport = getattr(conn, "_transport", None)
            if transport is not None:
                transport.abort()
        self._protocols.clear()


# --------------------------------------------------------------------------- authorization


def _peer_roles(stream: Stream) -> set[str] | None:
    """Roles of the TLS client (None: no client certificate)."""
    transport = stream.peer._transport  # grpclib keeps the transport here
    ssl_object = transport.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
    if not der:
        return None
    cert = x509.load_der_x509_certificate(der)
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        usages = list(eku)
    except x509.ExtensionNotFound:
        usages = []
    if usages != [ExtendedKeyUsageOID.CLIENT_AUTH]:
        raise GRPCError(Status.UNAUTHENTICATED,
                        "certificate is missing the client auth extended key usage")
    return {str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)}


class _Base:
    def __init__(self, node: EmulatedNode) -> None:
        self.node = node

    async def _enter(self, stream: Stream, *, admin: bool, method: str) -> None:
        n = self.node
        if n.faults.slow:
            await asyncio.sleep(n.faults.slow)
        if n.state.stage == "maintenance":
            return
        roles = _peer_roles(stream)
        if roles is None:
            raise GRPCError(Status.UNAUTHENTICATED, "client certificate required")
        if admin and ADMIN not in roles:
            raise GRPCError(Status.PERMISSION_DENIED, "not authorized")
        if not admin and not roles & {ADMIN, READER, "os:operator"}:
            raise GRPCError(Status.PERMISSION_DENIED, "not authorized")

    def _maintenance_admin_only(self, method: str) -> None:
        """Calls an insecure (reader) client may not make in maintenance mode."""
        n = self.node
        if n.state.stage != "maintenance":
            return
        if _minor(n.state.version) < (1, 13):
            raise GRPCError(Status.UNIMPLEMENTED, "API is not implemented in maintenance mode")
        raise GRPCError(Status.PERMISSION_DENIED, "not authorized")


class _MachineService(_Base, machine_grpc.MachineServiceBase):
    async def ApplyConfiguration(self, stream: Stream) -> None:
        req = await stream.recv_message()
        assert req is not None
        await self._enter(stream, admin=True, method="ApplyConfiguration")
        n = self.node
        n.state.apply_calls += 1
        if n.faults.apply_fails:
            raise GRPCError(Status.INTERNAL, n.faults.apply_fails)
        maintenance = n.state.stage == "maintenance"
        if maintenance and req.mode in (ApplyMode.NO_REBOOT, ApplyMode.STAGED):
            raise GRPCError(Status.UNIMPLEMENTED, f"apply configuration --mode='"
                            f"{ApplyMode.Name(req.mode).lower().replace('_', '-')}' "
                            "is not supported in maintenance mode")
        if not maintenance and req.mode == ApplyMode.REBOOT and _minor(n.state.version) >= (1, 14):
            raise GRPCError(Status.UNIMPLEMENTED, "the REBOOT mode is not supported, please use "
                            "AUTO or NO_REBOOT modes instead")
        if n.state.stage not in ("maintenance", "running"):
            raise GRPCError(Status.FAILED_PRECONDITION, f"node is {n.state.stage}")
        try:
            text = req.data.decode("utf-8")
        except UnicodeDecodeError:
            raise GRPCError(Status.INVALID_ARGUMENT, "failed to parse config: not UTF-8") from None
        cfg = self._validate(text)
        if req.dry_run:
            if maintenance:
                details = "Node is running in maintenance mode and does not have a config yet."
            else:
                old = n.state.config.text if n.state.config else ""
                diff = "".join(difflib.unified_diff(old.splitlines(True), text.splitlines(True),
                                                    "current", "new"))
                details = ("Dry run summary:\nApplied configuration without a reboot "
                           f"(skipped in dry-run).\n\nConfig diff:\n\n{diff or 'No changes.'}")
            await stream.send_message(_apply_response(req.mode, details))
            return
        if maintenance:
            other = n.rack.node_with_mac_conflict(n, cfg)
            if other:
                n._log(f"config selects MAC of {other}")
            n.state.config = cfg
            n.state.last_error = ""
            await stream.send_message(_apply_response(ApplyMode.AUTO, "Applied configuration "
                                                      "with a reboot"))
            n._spawn(n._install(cfg))
            return
        n.state.config = cfg
        await stream.send_message(_apply_response(ApplyMode.NO_REBOOT if req.mode == ApplyMode.AUTO
                                                  else req.mode,
                                                  "Applied configuration without a reboot"))

    def _validate(self, text: str) -> AppliedConfig:
        """Schema + Talos runtime checks; the last accepted text is remembered (a dry run is
        usually followed by the same config)."""
        n = self.node
        digest = hashlib.sha256(f"{n.state.version}\0{text}".encode()).hexdigest()
        if n._validated is not None and n._validated[0] == digest:
            return n._validated[1]
        from .schemas import ConfigRejected, parse_config, talos_config_problems

        try:
            docs = parse_config(text)
        except ConfigRejected as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, f"failed to parse config: {exc}") from None
        errors = talos_config_problems(docs, n.state.version) if docs else ["config is empty"]
        if errors:
            raise GRPCError(Status.INVALID_ARGUMENT, "configuration validation failed:\n"
                            + "\n".join(f"  * {e}" for e in errors))
        if not any(d.get("version") == "v1alpha1" for d in docs):
            raise GRPCError(Status.INVALID_ARGUMENT, "the config doesn't contain v1alpha1 config, "
                            "did you mean to patch the machine config instead?")
        cfg = AppliedConfig.parse(text, docs)
        v1 = next(d for d in docs if d.get("version") == "v1alpha1")
        problems = runtime_problems(cfg)
        if v1.get("persist") is False:
            problems.append(".persist should be enabled")
        if problems:
            head = "1 error occurred" if len(problems) == 1 else f"{len(problems)} errors occurred"
            raise GRPCError(Status.INVALID_ARGUMENT,
                            head + ":\n" + "\n".join(f"\t* {p}" for p in problems))
        n._validated = (digest, cfg)
        return cfg

    async def Bootstrap(self, stream: Stream) -> None:
        req = await stream.recv_message()
        assert req is not None
        n = self.node
        n.state.bootstrap_rpcs += 1
        await self._enter(stream, admin=True, method="Bootstrap")
        self._maintenance_admin_only("Bootstrap")
        if n.state.stage != "running":
            raise GRPCError(Status.FAILED_PRECONDITION, "bootstrap is not available yet")
        cfg = n.state.config
        if cfg is None or not cfg.is_controlplane:
            raise GRPCError(Status.UNIMPLEMENTED,
                            "bootstrap is only available on control plane nodes")
        if n.state.etcd_member_id is not None:
            raise GRPCError(Status.ALREADY_EXISTS, "etcd data directory is not empty")
        n.rack.etcd_bootstrap(n)
        n.state.bootstrap_calls += 1
        await stream.send_message(machine_pb2.BootstrapResponse(
            messages=[machine_pb2.Bootstrap()]))

    async def EtcdMemberList(self, stream: Stream) -> None:
        await stream.recv_message()
        await self._enter(stream, admin=False, method="EtcdMemberList")
        self._maintenance_admin_only("EtcdMemberList")
        n = self.node
        if n.state.etcd_member_id is None:
            raise GRPCError(Status.FAILED_PRECONDITION,
                            "etcd is not running: the etcd data directory is empty")
        members = [machine_pb2.EtcdMember(id=mid, hostname=host,
                                          peer_urls=[f"https://{ip}:2380"],
                                          client_urls=[f"https://{ip}:2379"])
                   for mid, host, ip in n.etcd_members()]
        await stream.send_message(machine_pb2.EtcdMemberListResponse(
            messages=[machine_pb2.EtcdMembers(members=members)]))

    async def Kubeconfig(self, stream: Stream) -> None:
        await stream.recv_message()
        await self._enter(stream, admin=True, method="Kubeconfig")
        self._maintenance_admin_only("Kubeconfig")
        n = self.node
        cfg = n.state.config
        if cfg is None or not cfg.is_controlplane or cfg.k8s_ca_key is None:
            raise GRPCError(Status.FAILED_PRECONDITION,
                            "kubeconfig is only available on control plane nodes")
        archive = _kubeconfig_archive(cfg, n.rack.kube_api_url or cfg.endpoint)
        for i in range(0, len(archive), 1024):
            await stream.send_message(common_pb2.Data(bytes=archive[i : i + 1024]))

    async def Read(self, stream: Stream) -> None:
        req = await stream.recv_message()
        assert req is not None
        await self._enter(stream, admin=True, method="Read")
        self._maintenance_admin_only("Read")
        if req.path != "/proc/sys/kernel/random/boot_id":
            raise GRPCError(Status.NOT_FOUND, f"open {req.path}: no such file or directory")
        await stream.send_message(common_pb2.Data(bytes=f"{self.node.state.boot_id}\n".encode()))

    async def Reboot(self, stream: Stream) -> None:
        await stream.recv_message()
        await self._enter(stream, admin=True, method="Reboot")
        self._maintenance_admin_only("Reboot")
        n = self.node
        await stream.send_message(machine_pb2.RebootResponse(
            messages=[machine_pb2.Reboot(actor_id=f"reboot-{time.monotonic_ns()}")]))
        n._spawn(n._reboot_into("running"))

    async def Upgrade(self, stream: Stream) -> None:
        req = await stream.recv_message()
        assert req is not None
        await self._enter(stream, admin=True, method="Upgrade")
        self._maintenance_admin_only("Upgrade")
        n = self.node
        tag = tag_of(req.image)
        if not tag.startswith("v"):
            raise GRPCError(Status.INVALID_ARGUMENT, f"image {req.image!r} has no version tag")
        if n.state.stage != "running":
            raise GRPCError(Status.FAILED_PRECONDITION, f"node is {n.state.stage}")
        await stream.send_message(machine_pb2.UpgradeResponse(messages=[machine_pb2.Upgrade(
            ack="Upgrade request received", actor_id=f"upgrade-{time.monotonic_ns()}")]))
        n.state.upgrades += 1
        n._spawn(n._upgrade(tag, req.image))

    async def EtcdStatus(self, stream: Stream) -> None:
        await stream.recv_message()
        await self._enter(stream, admin=False, method="EtcdStatus")
        self._maintenance_admin_only("EtcdStatus")
        n = self.node
        mid = self._etcd_member("EtcdStatus")
        errors = [n.faults.etcd_error] if n.faults.etcd_error else []
        await stream.send_message(machine_pb2.EtcdStatusResponse(messages=[
            machine_pb2.EtcdStatus(member_status=machine_pb2.EtcdMemberStatus(
                member_id=mid, protocol_version="3.5.0", db_size=2 << 20,
                db_size_in_use=1 << 20, leader=n.rack.etcd_leader(n), raft_index=n.rack.raft_index,
                raft_term=2, raft_applied_index=n.rack.raft_index, errors=errors))]))

    def _etcd_member(self, method: str) -> int:
        n = self.node
        cfg = n.state.config
        if cfg is None or not cfg.is_controlplane:
            raise GRPCError(Status.UNIMPLEMENTED,
                            f"{method} is only available on control plane nodes")
        if n.state.etcd_member_id is None:
            raise GRPCError(Status.FAILED_PRECONDITION,
                            "etcd is not running: the etcd data directory is empty")
        return n.state.etcd_member_id

    async def EtcdLeaveCluster(self, stream: Stream) -> None:
        await stream.recv_message()
        await self._enter(stream, admin=True, method="EtcdLeaveCluster")
        self._maintenance_admin_only("EtcdLeaveCluster")
        n = self.node
        mid = self._etcd_member("EtcdLeaveCluster")
        refusal = n.rack.etcd_remove(n, mid)
        if refusal:
            raise GRPCError(Status.FAILED_PRECONDITION, refusal)
        await stream.send_message(machine_pb2.EtcdLeaveClusterResponse(
            messages=[machine_pb2.EtcdLeaveCluster()]))

    async def EtcdRemoveMemberByID(self, stream: Stream) -> None:
        req = await stream.recv_message()
        assert req is not None
        await self._enter(stream, admin=True, method="EtcdRemoveMemberByID")
        self._maintenance_admin_only("EtcdRemoveMemberByID")
        n = self.node
        self._etcd_member("EtcdRemoveMemberByID")
        refusal = n.rack.etcd_remove(n, req.member_id)
        if refusal:
            code = Status.NOT_FOUND if "not found" in refusal else Status.FAILED_PRECONDITION
            raise GRPCError(code, refusal)
        await stream.send_message(machine_pb2.EtcdRemoveMemberByIDResponse(
            messages=[machine_pb2.EtcdRemoveMemberByID()]))

    async def Reset(self, stream: Stream) -> None:
        req = await stream.recv_message()
        assert req is not None
        await self._enter(stream, admin=True, method="Reset")
        self._maintenance_admin_only("Reset")
        n = self.node
        if n.state.stage != "running":
            raise GRPCError(Status.FAILED_PRECONDITION, f"node is {n.state.stage}")
        if req.graceful and n.state.etcd_member_id is not None:
            # graceful: the node leaves etcd first, with etcd's own quorum check
            refusal = n.rack.etcd_remove(n, n.state.etcd_member_id)
            if refusal:
                raise GRPCError(Status.FAILED_PRECONDITION, f"failed to leave etcd: {refusal}")
        n.state.resets += 1
        await stream.send_message(machine_pb2.ResetResponse(messages=[
            machine_pb2.Reset(actor_id=f"reset-{time.monotonic_ns()}")]))
        n._spawn(n._reset(req.reboot))

    async def Version(self, stream: Stream) -> None:
        await stream.recv_message()
        await self._enter(stream, admin=False, method="Version")
        n = self.node
        if n.state.stage == "maintenance" and _minor(n.state.version) < (1, 13):
            raise GRPCError(Status.UNIMPLEMENTED, "API is not implemented in maintenance mode")
        await stream.send_message(machine_pb2.VersionResponse(messages=[machine_pb2.Version(
            version=machine_pb2.VersionInfo(tag=n.state.version, sha="emulated", os="Talos",
                                            arch="amd64"),
            platform=machine_pb2.PlatformInfo(name="metal", mode="metal"),
            features=machine_pb2.FeaturesInfo(rbac=True),
        )]))


def _apply_response(
    mode: machine_pb2.ApplyConfigurationRequest.Mode, details: str
) -> machine_pb2.ApplyConfigurationResponse:
    return machine_pb2.ApplyConfigurationResponse(messages=[machine_pb2.ApplyConfiguration(
        mode=mode, mode_details=details)])


class _StorageService(_Base, storage_grpc.StorageServiceBase):
    async def Disks(self, stream: Stream) -> None:
        await stream.recv_message()
        await self._enter(stream, admin=False, method="Disks")
        kinds = storage_pb2.Disk.DiskType
        disks = [storage_pb2.Disk(size=d.size, model=d.model, device_name=d.device_name,
                                  name=d.name, serial=d.serial, modalias=d.modalias, uuid=d.uuid,
                                  wwid=d.wwid, type=kinds.Value(d.type), bus_path=d.bus_path,
                                  system_disk=d.system_disk, readonly=d.readonly)
                 for d in self.node.disks]
        await stream.send_message(storage_pb2.DisksResponse(
            messages=[storage_pb2.Disks(disks=disks)]))


class _StateService(_Base, cosi_resource_grpc.StateBase):
    def _resource(self, namespace: str, type_: str, id_: str,
                  spec: Any) -> cosi_resource_pb2.Resource:
        return cosi_resource_pb2.Resource(
            metadata=cosi_resource_pb2.Metadata(namespace=namespace, type=type_, id=id_,
                                                version="1", phase="running"),
            spec=cosi_resource_pb2.Spec(yaml_spec=spec if isinstance(spec, RawSpec)
                                        else yaml.safe_dump(spec, sort_keys=False)),
        )

    async def Get(self, stream: Stream) -> None:
        req = await stream.recv_message()
        assert req is not None
        await self._enter(stream, admin=req.type in SENSITIVE, method="Get")
        items = self.node.resources(req.namespace, req.type)
        if req.id not in items:
            raise GRPCError(Status.NOT_FOUND, f"resource {req.type}/{req.id} doesn't exist")
        await stream.send_message(cosi_resource_pb2.GetResponse(
            resource=self._resource(req.namespace, req.type, req.id, items[req.id])))

    async def List(self, stream: Stream) -> None:
        req = await stream.recv_message()
        assert req is not None
        await self._enter(stream, admin=req.type in SENSITIVE, method="List")
        for id_, spec in self.node.resources(req.namespace, req.type).items():
            await stream.send_message(cosi_resource_pb2.ListResponse(
                resource=self._resource(req.namespace, req.type, id_, spec)))


# --------------------------------------------------------------------------- kubeconfig


def _kubeconfig_archive(cfg: AppliedConfig, server: str) -> bytes:
    """A .tar.gz with one file ``kubeconfig`` holding an admin kubeconfig for ``server``."""
    assert cfg.k8s_ca_crt is not None and cfg.k8s_ca_key is not None
    import base64

    ca = CertAndKey(cfg.k8s_ca_crt, cfg.k8s_ca_key)
    admin = issue_cert(ca, new_p256(), common_name="admin", organizations=("system:masters",),
                       client=True, validity=dt.timedelta(days=365))
    assert admin.key is not None
    name = cfg.cluster_name
    user = f"admin@{name}"

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server,
                                                "certificate-authority-data": b64(ca.crt)}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(admin.crt),
                                          "client-key-data": b64(admin.key)}}],
        "contexts": [{"name": user, "context": {"cluster": name, "namespace": "default",
                                                "user": user}}],
        "current-context": user,
    }
    data = yaml.safe_dump(doc, sort_keys=False).encode()
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        info = tarfile.TarInfo("kubeconfig")
        info.size = len(data)
        info.mode = 0o600
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
