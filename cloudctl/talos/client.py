"""Talos API client on grpclib over the standard ``ssl`` module (DESIGN.md #1).

Two kinds of connection, as talosctl makes them:

* **maintenance** (``talosctl --insecure``): TLS without a client certificate and without
  verifying the node's (self-signed, Ed25519) certificate; optionally pinned to the SHA-256 of
  the certificate's SubjectPublicKeyInfo (``spki_pins``).
* **normal**: mutual TLS from the talosconfig (OS CA, admin certificate and key). Talos writes
  Ed25519 keys with the PEM label "ED25519 PRIVATE KEY", which OpenSSL refuses; the key is
  relabelled through :func:`cloudctl.secrets.load_private_key` before it reaches ``ssl``.

Every call has a deadline; retries happen only on the status codes talosctl retries (see
:class:`RetryPolicy`). Library errors become :class:`TalosApiError` (a ``RemoteError``) or
:class:`cloudctl.errors.Timeout`, both naming the node and the method. The client talks to
one node (the endpoint itself; no ``node``/``nodes`` proxy metadata) — fan-out is done by
:mod:`cloudctl.talos.ops`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import functools
import gzip
import hashlib
import io
import os
import ssl
import tarfile
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from google.protobuf import empty_pb2
from grpclib.client import Channel, Handler
from grpclib.config import Configuration
from grpclib.const import Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from grpclib.protocol import H2Protocol

from ..errors import RemoteError, SecretsError, Timeout
from ..secrets import load_private_key
from ..util.yamlcache import safe_load as yaml_safe_load
from .proto import cosi_resource_grpc, cosi_resource_pb2, machine_grpc, machine_pb2, storage_grpc

APID_PORT = 50000
DEFAULT_TIMEOUT = 10.0
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"

T = TypeVar("T")

ApplyMode = machine_pb2.ApplyConfigurationRequest.Mode


# --------------------------------------------------------------------------- errors


class TalosApiError(RemoteError):
    """A Talos node refused or failed a call (or could not be reached)."""

    def __init__(self, node: str, method: str, code: Status, detail: str) -> None:
        self.node = node
        self.method = method
        self.code = code
        self.detail = detail
        super().__init__(f"Talos node {node}: {method}: {code.name}: {detail}")


class TalosTimeout(Timeout):
    def __init__(self, node: str, method: str, seconds: float) -> None:
        self.node = node
        self.method = method
        super().__init__(f"Talos node {node}: {method}: no answer within {seconds:g}s")


# --------------------------------------------------------------------------- endpoints and TLS


@dataclass(frozen=True)
class Endpoint:
    """Where a node's apid is reached.

    ``node`` is the node's address as the inventory and its certificate know it (used in
    messages and as the TLS server name); ``host``/``port`` is the socket to dial (the same
    address on a real network, a loopback alias for emulated nodes).
    """

    node: str
    host: str
    port: int = APID_PORT
    name: str = ""
    """Inventory node name, when known (for messages only)."""

    @classmethod
    def of(cls, address: str, port: int = APID_PORT) -> Endpoint:
        return cls(address, address, port)

    def named(self, name: str) -> Endpoint:
        return dataclasses.replace(self, name=name)

    @property
    def label(self) -> str:
        """How messages name the node: ``cp1 (10.20.0.11)`` or just the address."""
        return f"{self.name} ({self.node})" if self.name else self.node

    def __str__(self) -> str:
        if self.host == self.node:
            return self.label
        return f"{self.label} via {self.host}:{self.port}"


@dataclass(frozen=True)
class Credentials:
    """mTLS material of one talosconfig context (PEM)."""

    ca: bytes
    crt: bytes
    key: bytes = field(repr=False)

    @classmethod
    def from_talosconfig(cls, text: str, context: str | None = None) -> Credentials:
        try:
            doc = yaml_safe_load(text)
            name = context or doc["context"]
            ctx = doc["contexts"][name]
            return cls(
                base64.b64decode(ctx["ca"]),
                base64.b64decode(ctx["crt"]),
                base64.b64decode(ctx["key"]),
            )
        except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
            raise SecretsError(
                f"talosconfig: cannot read context {context or ''!r}: {exc}"
            ) from None


def spki_sha256(cert_der: bytes) -> str:
    """Hex SHA-256 of a certificate's SubjectPublicKeyInfo (the value a pin compares)."""
    cert = x509.load_der_x509_certificate(cert_der)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def _normalise_pin(pin: str) -> str:
    p = pin.strip().lower().replace(":", "")
    if len(p) == 64 and all(c in "0123456789abcdef" for c in p):
        return p
    try:
        raw = base64.b64decode(pin.strip(), validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise SecretsError(f"SPKI pin {pin!r} is neither 64 hex digits nor base64 of 32 bytes")
    return raw.hex()


@functools.lru_cache(maxsize=1)
def maintenance_ssl_context() -> ssl.SSLContext:
    """TLS client context for maintenance mode: no client cert, server cert not verified.

    One for the process: a context is immutable once built and shared by all connections
    (building one is OpenSSL's SSL_CTX_new, about as costly as a handshake's client side).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["h2"])
    return ctx


@functools.lru_cache(maxsize=8)
def mtls_ssl_context(creds: Credentials) -> ssl.SSLContext:
    """TLS client context for normal mode: verify the node against the OS CA, present our cert.

    Cached per credentials: a context is immutable once built and shared by all connections.
    """
    key = load_private_key(creds.key)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["h2"])
    try:
        ctx.load_verify_locations(cadata=creds.ca.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError) as exc:
        raise SecretsError(f"talosconfig: the CA certificate does not load: {exc}") from None
    # ssl only loads keys from files; keep the file private and short-lived.
    fd, path = tempfile.mkstemp(prefix="cloudctl-talos-", suffix=".pem")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(creds.crt + b"\n" + key_pem)
        ctx.load_cert_chain(path)
    except ssl.SSLError as exc:
        raise SecretsError(f"talosconfig: client certificate/key do not load: {exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    return ctx


class _RecordingProtocol(H2Protocol):
    """Keeps the exception the connection was lost with (e.g. a TLS alert from the node)."""

    lost_with: BaseException | None = None

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost_with = exc
        super().connection_lost(exc)


class _Channel(Channel):
    """grpclib channel that remembers TLS failures and checks SPKI pins after the handshake."""

    def __init__(self, *args: Any, pins: frozenset[str] = frozenset(), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pins = pins
        self.last_protocol: _RecordingProtocol | None = None

    def _protocol_factory(self) -> H2Protocol:
        proto = _RecordingProtocol(Handler(), self._config, self._h2_config)
        self.last_protocol = proto
        return proto

    async def _create_connection(self) -> Any:
        protocol = await super()._create_connection()
        if self._pins:
            transport = protocol.connection._transport
            ssl_object = transport.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
            got = spki_sha256(der) if der else "(no certificate)"
            if got not in self._pins:
                transport.close()
                raise ssl.SSLError(f"server key SPKI sha256 {got} matches no pinned fingerprint")
        return protocol

    def tls_failure(self) -> ssl.SSLError | None:
        lost = self.last_protocol.lost_with if self.last_protocol else None
        return lost if isinstance(lost, ssl.SSLError) else None


# --------------------------------------------------------------------------- retries


@dataclass(frozen=True)
class RetryPolicy:
    """Which failures are retried, how often, and how long to wait in between.

    talosctl retries connection failures (Unavailable: "connection refused", EOF) on reads, and
    its bootstrap helper additionally FailedPrecondition, DeadlineExceeded and Canceled
    (talos pkg/cluster/bootstrap.go). Everything else is returned at once.
    """

    codes: frozenset[Status] = frozenset({Status.UNAVAILABLE})
    attempts: int = 3
    delay: float = 0.2

    def retries(self, code: Status) -> bool:
        return code in self.codes


NO_RETRY = RetryPolicy(frozenset(), attempts=1)
READ_RETRY = RetryPolicy()
BOOTSTRAP_RETRY = RetryPolicy(
    frozenset(
        {Status.FAILED_PRECONDITION, Status.DEADLINE_EXCEEDED, Status.CANCELLED, Status.UNAVAILABLE}
    ),
    attempts=10,
    delay=0.5,
)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class VersionInfo:
    tag: str
    sha: str
    arch: str
    platform: str
    mode: str


@dataclass(frozen=True)
class ApplyResult:
    mode: str
    mode_details: str
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class EtcdMember:
    id: int
    hostname: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool


@dataclass(frozen=True)
class EtcdStatus:
    """``EtcdStatus`` of the member on one control plane: its view of the leader and raft
    progress, and the errors etcd reports for it (empty when healthy)."""

    member_id: int
    leader: int
    raft_index: int
    raft_term: int
    errors: tuple[str, ...]
    is_learner: bool


@dataclass(frozen=True)
class DiskInfo:
    """One block device as ``storage.Disks`` reports it (size in bytes)."""

    device_name: str
    size: int
    model: str = ""
    serial: str = ""
    type: str = "UNKNOWN"
    wwid: str = ""
    bus_path: str = ""
    modalias: str = ""
    uuid: str = ""
    name: str = ""
    system_disk: bool = False
    readonly: bool = False


@dataclass(frozen=True)
class Resource:
    """A COSI resource: pointer, version and the YAML spec decoded."""

    namespace: str
    type: str
    id: str
    version: str
    spec: Any


# --------------------------------------------------------------------------- client


def _metadata_error(method: str, node: str, items: Any) -> None:
    for item in items:
        md = item.metadata
        if md.error:
            raise TalosApiError(node, method, Status.UNKNOWN, md.error)


class TalosClient:
    """One connection to one node's apid. Use as ``async with TalosClient(...) as c:``.

    ``credentials=None`` makes a maintenance-mode (insecure) connection.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        credentials: Credentials | None = None,
        *,
        spki_pins: tuple[str, ...] = (),
        timeout: float = DEFAULT_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
        read_retry: RetryPolicy | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.read_retry = READ_RETRY if read_retry is None else read_retry
        self.insecure = credentials is None
        self.timeout = timeout
        if ssl_context is None:
            ssl_context = (
                maintenance_ssl_context() if credentials is None else mtls_ssl_context(credentials)
            )
        self._ssl = ssl_context
        self._pins = frozenset(_normalise_pin(p) for p in spki_pins)
        self._channel: _Channel | None = None

    @property
    def node(self) -> str:
        """The node as messages name it."""
        return self.endpoint.label

    def _chan(self) -> _Channel:
        if self._channel is None:
            config = Configuration(ssl_target_name_override=self.endpoint.node)
            kwargs: dict[str, Any] = {"ssl": self._ssl, "config": config}
            self._channel = _Channel(
                self.endpoint.host, self.endpoint.port, pins=self._pins, **kwargs
            )
        return self._channel

    def peer_spki(self) -> str | None:
        """SPKI SHA-256 of the certificate the node presented on the current connection."""
        protocol = getattr(self._channel, "_protocol", None) if self._channel else None
        transport = getattr(getattr(protocol, "connection", None), "_transport", None)
        ssl_object = transport.get_extra_info("ssl_object") if transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        return spki_sha256(der) if der else None

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    async def __aenter__(self) -> TalosClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ call machinery

    async def _call(
        self,
        method: str,
        fn: Callable[[float], Awaitable[T]],
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> T:
        """Run ``fn(deadline)``; map errors; retry per ``retry`` (default: the read policy)."""
        retry = self.read_retry if retry is None else retry
        deadline = self.timeout if timeout is None else timeout
        attempt = 0
        while True:
            attempt += 1
            try:
                return await fn(deadline)
            except GRPCError as exc:
                err: TalosApiError | TalosTimeout = TalosApiError(
                    self.node, method, exc.status, exc.message or ""
                )
                code = exc.status
            except TimeoutError:
                err = TalosTimeout(self.node, method, deadline)
                code = Status.DEADLINE_EXCEEDED
            except ssl.SSLError as exc:
                # A TLS refusal is not transient: wrong CA, missing client cert, pin mismatch.
                self.close()
                raise TalosApiError(
                    self.node, method, Status.UNAVAILABLE, f"TLS handshake refused: {exc}"
                ) from None
            except (OSError, StreamTerminatedError, ProtocolError, EOFError) as exc:
                tls = self._channel.tls_failure() if self._channel else None
                self.close()
                if tls is not None:
                    raise TalosApiError(
                        self.node, method, Status.UNAVAILABLE, f"TLS refused by the node: {tls}"
                    ) from None
                detail = _describe_connection_error(exc)
                if not self.insecure and isinstance(exc, StreamTerminatedError):
                    detail += " (a node in normal mode closes connections whose client "
                    detail += "certificate it does not accept)"
                err = TalosApiError(self.node, method, Status.UNAVAILABLE, detail)
                code = Status.UNAVAILABLE
            if not retry.retries(code) or attempt >= retry.attempts:
                raise err from None
            await asyncio.sleep(retry.delay)

    # ------------------------------------------------------------------ machine.MachineService

    def _machine(self) -> machine_grpc.MachineServiceStub:
        return machine_grpc.MachineServiceStub(self._chan())

    async def version(self) -> VersionInfo:
        async def call(t: float) -> machine_pb2.VersionResponse:
            return await self._machine().Version(empty_pb2.Empty(), timeout=t)

        resp = await self._call("Version", call)
        _metadata_error("Version", self.node, resp.messages)
        if not resp.messages:
            raise TalosApiError(self.node, "Version", Status.UNKNOWN, "empty response")
        m = resp.messages[0]
        return VersionInfo(m.version.tag, m.version.sha, m.version.arch, m.platform.name,
                           m.platform.mode)

    async def apply_configuration(
        self,
        data: bytes,
        *,
        mode: machine_pb2.ApplyConfigurationRequest.Mode = ApplyMode.AUTO,
        dry_run: bool = False,
    ) -> ApplyResult:
        """ApplyConfiguration; ``mode`` is always sent explicitly (never the REBOOT default)."""
        if mode == ApplyMode.REBOOT:
            raise ValueError("ApplyConfiguration mode REBOOT is deprecated; use AUTO")
        req = machine_pb2.ApplyConfigurationRequest(data=data, mode=mode, dry_run=dry_run)

        async def call(t: float) -> machine_pb2.ApplyConfigurationResponse:
            return await self._machine().ApplyConfiguration(req, timeout=t)

        # Retried only when the call never reached the node (connection refused).
        resp = await self._call("ApplyConfiguration", call, RetryPolicy(frozenset(), attempts=1))
        _metadata_error("ApplyConfiguration", self.node, resp.messages)
        m = resp.messages[0] if resp.messages else machine_pb2.ApplyConfiguration()
        return ApplyResult(ApplyMode.Name(m.mode), m.mode_details, tuple(m.warnings))

    async def bootstrap(self, retry: RetryPolicy = BOOTSTRAP_RETRY) -> None:
        async def call(t: float) -> machine_pb2.BootstrapResponse:
            return await self._machine().Bootstrap(machine_pb2.BootstrapRequest(), timeout=t)

        resp = await self._call("Bootstrap", call, retry)
        _metadata_error("Bootstrap", self.node, resp.messages)

    async def etcd_members(self) -> list[EtcdMember]:
        req = machine_pb2.EtcdMemberListRequest(query_local=False)

        async def call(t: float) -> machine_pb2.EtcdMemberListResponse:
            return await self._machine().EtcdMemberList(req, timeout=t)

        resp = await self._call("EtcdMemberList", call)
        _metadata_error("EtcdMemberList", self.node, resp.messages)
        out = []
        for msg in resp.messages:
            for m in msg.members:
                out.append(EtcdMember(m.id, m.hostname, tuple(m.peer_urls), tuple(m.client_urls),
                                      m.is_learner))
        return out

    async def etcd_status(self) -> EtcdStatus:
        """``EtcdStatus`` of this node's own etcd member (control planes only)."""

        async def call(t: float) -> machine_pb2.EtcdStatusResponse:
            return await self._machine().EtcdStatus(empty_pb2.Empty(), timeout=t)

        resp = await self._call("EtcdStatus", call)
        _metadata_error("EtcdStatus", self.node, resp.messages)
        if not resp.messages:
            raise TalosApiError(self.node, "EtcdStatus", Status.UNKNOWN, "empty response")
        m = resp.messages[0].member_status
        return EtcdStatus(m.member_id, m.leader, m.raft_index, m.raft_term, tuple(m.errors),
                          m.is_learner)

    async def etcd_leave_cluster(self) -> None:
        """``EtcdLeaveCluster`` on the node that leaves (it must still run)."""

        async def call(t: float) -> machine_pb2.EtcdLeaveClusterResponse:
            return await self._machine().EtcdLeaveCluster(
                machine_pb2.EtcdLeaveClusterRequest(), timeout=t)

        resp = await self._call("EtcdLeaveCluster", call, NO_RETRY)
        _metadata_error("EtcdLeaveCluster", self.node, resp.messages)

    async def etcd_remove_member(self, member_id: int) -> None:
        """``EtcdRemoveMemberByID``, asked of a remaining member, for a member whose node is
        gone."""
        req = machine_pb2.EtcdRemoveMemberByIDRequest(member_id=member_id)

        async def call(t: float) -> machine_pb2.EtcdRemoveMemberByIDResponse:
            return await self._machine().EtcdRemoveMemberByID(req, timeout=t)

        resp = await self._call("EtcdRemoveMemberByID", call, NO_RETRY)
        _metadata_error("EtcdRemoveMemberByID", self.node, resp.messages)

    async def reset(self, *, graceful: bool = True, reboot: bool = False) -> None:
        """``Reset``: wipe the node (all disks' Talos partitions) and halt or reboot."""
        req = machine_pb2.ResetRequest(graceful=graceful, reboot=reboot)

        async def call(t: float) -> machine_pb2.ResetResponse:
            return await self._machine().Reset(req, timeout=t)

        resp = await self._call("Reset", call, NO_RETRY)
        _metadata_error("Reset", self.node, resp.messages)

    async def kubeconfig_archive(self) -> bytes:
        """The raw Kubeconfig stream (a .tar.gz holding one file ``kubeconfig``)."""

        async def call(t: float) -> bytes:
            chunks: list[bytes] = []
            async with self._machine().Kubeconfig.open(timeout=t) as stream:
                await stream.send_message(empty_pb2.Empty(), end=True)
                async for data in stream:
                    if data.metadata.error:
                        raise TalosApiError(self.node, "Kubeconfig", Status.UNKNOWN,
                                            data.metadata.error)
                    chunks.append(data.bytes)
            return b"".join(chunks)

        return await self._call("Kubeconfig", call)

    async def kubeconfig(self) -> bytes:
        """The admin kubeconfig the node issues (extracted from the tar.gz stream)."""
        archive = await self.kubeconfig_archive()
        try:
            return extract_kubeconfig(archive)
        except ValueError as exc:
            raise TalosApiError(self.node, "Kubeconfig", Status.DATA_LOSS, str(exc)) from None

    async def read_file(self, path: str) -> bytes:
        """MachineService.Read: a file's contents (e.g. ``/proc/sys/kernel/random/boot_id``)."""
        req = machine_pb2.ReadRequest(path=path)

        async def call(t: float) -> bytes:
            chunks: list[bytes] = []
            async with self._machine().Read.open(timeout=t) as stream:
                await stream.send_message(req, end=True)
                async for data in stream:
                    if data.metadata.error:
                        raise TalosApiError(self.node, f"Read {path}", Status.UNKNOWN,
                                            data.metadata.error)
                    chunks.append(data.bytes)
            return b"".join(chunks)

        return await self._call(f"Read {path}", call)

    async def boot_id(self) -> str:
        return (await self.read_file(BOOT_ID_PATH)).decode().strip()

    async def reboot(
        self, mode: machine_pb2.RebootRequest.Mode = machine_pb2.RebootRequest.DEFAULT
    ) -> None:
        async def call(t: float) -> machine_pb2.RebootResponse:
            return await self._machine().Reboot(machine_pb2.RebootRequest(mode=mode), timeout=t)

        resp = await self._call("Reboot", call, NO_RETRY)
        _metadata_error("Reboot", self.node, resp.messages)

    async def upgrade(self, image: str, *, stage: bool = False, force: bool = False) -> str:
        """Legacy ``MachineService.Upgrade`` (accepted v1.8 .. v1.17); returns the ack text."""
        req = machine_pb2.UpgradeRequest(image=image, stage=stage, force=force)

        async def call(t: float) -> machine_pb2.UpgradeResponse:
            return await self._machine().Upgrade(req, timeout=t)

        resp = await self._call("Upgrade", call, NO_RETRY)
        _metadata_error("Upgrade", self.node, resp.messages)
        return resp.messages[0].ack if resp.messages else ""

    # ------------------------------------------------------------------ storage.StorageService

    async def disks(self) -> list[DiskInfo]:
        async def call(t: float) -> Any:
            stub = storage_grpc.StorageServiceStub(self._chan())
            return await stub.Disks(empty_pb2.Empty(), timeout=t)

        resp = await self._call("Disks", call)
        _metadata_error("Disks", self.node, resp.messages)
        out = []
        for msg in resp.messages:
            for d in msg.disks:
                out.append(DiskInfo(
                    device_name=d.device_name, size=d.size, model=d.model, serial=d.serial,
                    type=type(d).DiskType.Name(d.type), wwid=d.wwid, bus_path=d.bus_path,
                    modalias=d.modalias, uuid=d.uuid, name=d.name, system_disk=d.system_disk,
                    readonly=d.readonly,
                ))
        return out

    # ------------------------------------------------------------------ cosi.resource.State

    def _state(self) -> cosi_resource_grpc.StateStub:
        return cosi_resource_grpc.StateStub(self._chan())

    async def get(self, namespace: str, type_: str, id_: str) -> Resource:
        req = cosi_resource_pb2.GetRequest(namespace=namespace, type=type_, id=id_)

        async def call(t: float) -> cosi_resource_pb2.GetResponse:
            return await self._state().Get(req, timeout=t)

        resp = await self._call(f"Get {type_}/{id_}", call)
        return _resource(resp.resource, self.node)

    async def machine_config(self) -> str:
        """The running machine config as the node holds it (COSI ``MachineConfigs`` /
        ``v1alpha1`` in namespace ``config``; its spec is the config text, possibly several
        documents; os:admin only)."""
        req = cosi_resource_pb2.GetRequest(namespace="config",
                                           type="MachineConfigs.config.talos.dev", id="v1alpha1")

        async def call(t: float) -> cosi_resource_pb2.GetResponse:
            return await self._state().Get(req, timeout=t)

        resp = await self._call("Get MachineConfigs.config.talos.dev/v1alpha1", call)
        return str(resp.resource.spec.yaml_spec)

    async def list(self, namespace: str, type_: str) -> list[Resource]:
        req = cosi_resource_pb2.ListRequest(namespace=namespace, type=type_)

        async def call(t: float) -> list[Resource]:
            out = []
            async with self._state().List.open(timeout=t) as stream:
                await stream.send_message(req, end=True)
                async for item in stream:
                    out.append(_resource(item.resource, self.node))
            return out

        return await self._call(f"List {type_}", call)

    async def machine_stage(self) -> str:
        """``MachineStatuses.runtime.talos.dev/machine`` stage (maintenance, running, ...)."""
        res = await self.get("runtime", "MachineStatuses.runtime.talos.dev", "machine")
        spec = res.spec if isinstance(res.spec, dict) else {}
        return str(spec.get("stage", ""))


def _resource(r: cosi_resource_pb2.Resource, node: str) -> Resource:
    try:
        spec = yaml_safe_load(r.spec.yaml_spec) if r.spec.yaml_spec else None
    except yaml.YAMLError as exc:
        raise TalosApiError(node, f"resource {r.metadata.type}", Status.DATA_LOSS,
                            f"yaml_spec is not YAML: {exc}") from None
    md = r.metadata
    return Resource(md.namespace, md.type, md.id, md.version, spec)


def _describe_connection_error(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, StreamTerminatedError | EOFError | ConnectionResetError):
        return f"connection closed by the node ({exc or type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}"


def extract_kubeconfig(archive: bytes) -> bytes:
    """The ``kubeconfig`` member of the .tar.gz the Kubeconfig RPC streams."""
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.lstrip("./") == "kubeconfig":
                    f = tar.extractfile(member)
                    if f is not None:
                        return f.read()
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, OSError) as exc:
        raise ValueError(f"kubeconfig archive is not a tar.gz: {exc}") from None
    raise ValueError("kubeconfig archive holds no file named 'kubeconfig'")
