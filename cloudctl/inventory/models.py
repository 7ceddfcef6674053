"""Typed, frozen model of ``inventory.yaml``.

YAML keys are camelCase (as in Talos and Kubernetes); Python attributes are snake_case. Unknown
keys are rejected everywhere. Defaults here are the documented defaults of the inventory format
(see ``inventory.example.yaml``); the Cozystack ones (cluster domain, system extensions) are read
from ``talos/preset.yaml``. Cross-field rules live in ``checks.py``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)
from pydantic.alias_generators import to_camel

from ..preset import preset

# --------------------------------------------------------------------------- scalar types

_MAC_RE = re.compile(r"^([0-9a-f]{2})([:-]?)([0-9a-f]{2})(\2[0-9a-f]{2}){4}$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(-[0-9A-Za-z.-]+)?$")
_HOST_RE = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def _mac(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a MAC address must be a string like 52:54:00:12:34:56")
    v = value.strip().lower()
    m = _MAC_RE.match(v)
    if not m:
        raise ValueError(f"{value!r} is not a MAC address (expected six hex octets)")
    hexs = re.sub(r"[:-]", "", v)
    if int(hexs[:2], 16) & 1:
        raise ValueError(f"{value!r} is a multicast MAC address; a NIC has a unicast one")
    return ":".join(hexs[i : i + 2] for i in range(0, 12, 2))


def _dns_label(value: Any) -> str:
    if not isinstance(value, str) or not _DNS_LABEL.match(value):
        raise ValueError(
            f"{value!r} is not a DNS label (lower-case letters, digits and '-', 1-63 chars)"
        )
    return value


def _version(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a version must be a string like v1.13.9 (quote it in YAML)")
    m = _VERSION_RE.match(value.strip())
    if not m:
        raise ValueError(f"{value!r} is not a version like v1.13.9")
    return "v" + value.strip().lstrip("v")


def _host(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a host name or IP address")
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not _HOST_RE.match(value):
        raise ValueError(f"{value!r} is neither an IP address nor a host name")
    return value


def _ipv4(value: Any) -> ipaddress.IPv4Address:
    if isinstance(value, ipaddress.IPv4Address):
        return value
    if not isinstance(value, str):
        raise ValueError("an IPv4 address must be a string like 10.0.0.1")
    try:
        return ipaddress.IPv4Address(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 address") from None


def _ipv4_net(value: Any) -> ipaddress.IPv4Network:
    if isinstance(value, ipaddress.IPv4Network):
        return value
    if not isinstance(value, str):
        raise ValueError("a network must be a string in CIDR form like 10.0.0.0/24")
    try:
        return ipaddress.IPv4Network(value.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an IPv4 network in CIDR form ({exc})") from None


def _ipv4_cidr_or_range(value: Any) -> str:
    """MetalLB address: CIDR (10.0.0.0/28) or range (10.0.0.10-10.0.0.20)."""
    if not isinstance(value, str):
        raise ValueError("an address pool entry must be a string")
    v = value.strip()
    if "-" in v:
        a, _, b = v.partition("-")
        lo, hi = _ipv4(a.strip()), _ipv4(b.strip())
        if hi < lo:
            raise ValueError(f"{value!r}: range end is before its start")
        return f"{lo}-{hi}"
    return str(_ipv4_net(v))


_AGE_RECIPIENT_RE = re.compile(r"^age1[02-9ac-hj-np-z]{58}$")
_SSH_RECIPIENT_RE = re.compile(r"^ssh-(ed25519|rsa) [A-Za-z0-9+/]+={0,2}( \S.*)?$")


def _age_recipient(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("an age recipient must be a string (age1... or ssh-ed25519 ...)")
    v = value.strip()
    if not (_AGE_RECIPIENT_RE.match(v) or _SSH_RECIPIENT_RE.match(v)):
        raise ValueError(f"{v[:20]!r}... is not an age public key (age1... with 58 bech32 "
                         "characters) nor an SSH public key")
    return v


Mac = Annotated[str, BeforeValidator(_mac)]
AgeRecipient = Annotated[str, BeforeValidator(_age_recipient)]
DnsLabel = Annotated[str, BeforeValidator(_dns_label)]
Version = Annotated[str, BeforeValidator(_version)]
Host = Annotated[str, BeforeValidator(_host)]
IPv4 = Annotated[ipaddress.IPv4Address, BeforeValidator(_ipv4)]
IPv4Net = Annotated[ipaddress.IPv4Network, BeforeValidator(_ipv4_net)]
PoolRange = Annotated[str, BeforeValidator(_ipv4_cidr_or_range)]


def _nonempty(v: str) -> str:
    if not v.strip():
        raise ValueError("must not be empty")
    return v


NonEmpty = Annotated[str, AfterValidator(_nonempty)]


class Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        strict=False,
        validate_default=True,
    )


# --------------------------------------------------------------------------- cluster


class Cluster(Model):
    """Cluster identity, endpoint and Kubernetes networking."""

    name: DnsLabel
    talos_version: Version
    kubernetes_version: Version
    vip: IPv4 | None = None
    """Shared control-plane address (Talos layer-2 VIP); required with several control planes."""
    endpoint: Host | None = None
    """API host name or IP; the API URL is https://<endpoint>:6443. Defaults to the VIP."""
    pod_subnets: list[IPv4Net] = Field(
        default_factory=lambda: [ipaddress.IPv4Network("100.65.0.0/16")], min_length=1
    )
    service_subnets: list[IPv4Net] = Field(
        default_factory=lambda: [ipaddress.IPv4Network("10.96.0.0/16")], min_length=1
    )
    domain: Host = Field(default_factory=lambda: preset().cluster_domain)
    """Cluster DNS domain; default ``defaults.clusterDomain`` of ``talos/preset.yaml``."""
    registry_mirrors: dict[NonEmpty, list[NonEmpty]] = Field(
        default_factory=lambda: {"docker.io": ["https://mirror.gcr.io"]}
    )
    cert_sans: list[Host] = Field(default_factory=list)
    allow_scheduling_on_control_planes: bool = True
    etcd_quota_backend_bytes: int | None = Field(default=8589934592, ge=0)

    @property
    def api_host(self) -> str:
        if self.endpoint:
            return self.endpoint
        return str(self.vip) if self.vip else ""

    @property
    def api_url(self) -> str:
        return f"https://{self.api_host}:6443"


# --------------------------------------------------------------------------- provisioning network


class DhcpRange(Model):
    start: IPv4
    end: IPv4

    @model_validator(mode="after")
    def _ordered(self) -> DhcpRange:
        if self.end < self.start:
            raise ValueError(f"range end {self.end} is before its start {self.start}")
        return self

    def __contains__(self, ip: object) -> bool:
        return isinstance(ip, ipaddress.IPv4Address) and self.start <= ip <= self.end


class Dhcp(Model):
    mode: Literal["full", "proxy"] = "full"
    """full: cloudctl is the DHCP server for inventory MACs; proxy: another server assigns
    addresses and cloudctl only adds boot options."""
    range: DhcpRange | None = None
    """Dynamic range for machines not in the inventory (full mode only). Absent: none."""
    lease_time: int = Field(default=3600, ge=60, le=7 * 86400)


class Network(Model):
    """The provisioning network the nodes PXE-boot on."""

    interface: NonEmpty
    """Interface of the provisioning host (where cloudctl runs) on this network."""
    subnet: IPv4Net
    gateway: IPv4
    boot_server: IPv4 | None = None
    """Address of the provisioning host on ``interface``; DHCP/TFTP/HTTP are served from it."""
    dns: list[IPv4] = Field(default_factory=list)
    ntp: list[Host] = Field(default_factory=list)
    dhcp: Dhcp = Field(default_factory=Dhcp)
    mtu: int | None = Field(default=None, ge=576, le=9216)
    router_advertisements: Literal["auto", "off"] = "auto"
    """``auto``: while the boot service runs, answer IPv6 router solicitations with an
    advertisement that configures nothing (lifetime 0, no prefixes), so iPXE does not wait
    ~13 s for IPv6 autoconfiguration; silent once another router advertises. ``off``: never."""


# --------------------------------------------------------------------------- image


DEFAULT_EXTENSIONS: tuple[str, ...] = preset().extensions
"""Default ``image.extensions`` (``defaults.extensions`` of ``talos/preset.yaml``)."""


def _extension_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("an extension is a name like siderolabs/zfs")
    v = value.strip()
    if v.startswith("ghcr.io/"):
        v = v[len("ghcr.io/") :]
    if "/" not in v:
        v = f"siderolabs/{v}"
    if ":" in v or "@" in v:
        raise ValueError(
            f"{value!r}: give the extension name only; versions are pinned per Talos release"
        )
    return v


ExtensionName = Annotated[str, BeforeValidator(_extension_name)]


class Installer(Model):
    source: Literal["factory", "registry"] = "factory"
    factory_url: Annotated[str, AfterValidator(_nonempty)] = "https://factory.talos.dev"
    image: str | None = None
    """Own registry: the installer repository (tag = Talos version), e.g.
    registry.example.com/talos/installer. Required when source is registry."""

    @model_validator(mode="after")
    def _registry_needs_image(self) -> Installer:
        if self.source == "registry" and not self.image:
            raise ValueError("installer.image is required when installer.source is 'registry'")
        if self.image and (":" in self.image.rsplit("/", 1)[-1] or "@" in self.image):
            raise ValueError(
                "installer.image is a repository without tag; the Talos version is the tag"
            )
        return self


class Image(Model):
    arch: Literal["amd64", "arm64"] = "amd64"
    extensions: list[ExtensionName] = Field(default_factory=lambda: list(DEFAULT_EXTENSIONS))
    extra_kernel_args: list[NonEmpty] = Field(default_factory=list)
    installer: Installer = Field(default_factory=Installer)
    secureboot: bool = False


# --------------------------------------------------------------------------- nodes


class DiskSelector(Model):
    """Talos ``machine.install.diskSelector``: every given field must match."""

    size: str | None = None
    """e.g. '>= 100GB', '<= 2TB', '480GB'"""
    model: str | None = None
    serial: str | None = None
    wwid: str | None = None
    type: Literal["ssd", "hdd", "nvme", "sd"] | None = None
    bus_path: str | None = None
    name: str | None = None
    modalias: str | None = None
    uuid: str | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> DiskSelector:
        if not any(v is not None for v in self.model_dump().values()):
            raise ValueError("a disk selector needs at least one field")
        if self.size is not None and not re.match(
            r"^\s*(>=|<=|>|<|==)?\s*\d+(\.\d+)?\s*(B|kB|KB|KiB|MB|MiB|GB|GiB|TB|TiB|PB|PiB)?\s*$",
            self.size,
        ):
            raise ValueError(f"size {self.size!r} is not like '>= 100GB'")
        return self


_LINK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")


def _link_name(value: Any) -> str:
    if not isinstance(value, str) or not _LINK_NAME.match(value):
        raise ValueError(f"{value!r} is not a Linux link name (1-15 chars)")
    return value


LinkName = Annotated[str, BeforeValidator(_link_name)]


class Bond(Model):
    name: LinkName
    members: list[Mac] = Field(min_length=1)
    """MAC addresses of the member NICs (must be among the node's MACs)."""
    mode: Literal[
        "balance-rr",
        "active-backup",
        "balance-xor",
        "broadcast",
        "802.3ad",
        "balance-tlb",
        "balance-alb",
    ] = "802.3ad"
    lacp_rate: Literal["slow", "fast"] | None = None
    xmit_hash_policy: Literal["layer2", "layer3+4", "layer2+3", "encap2+3", "encap3+4"] | None = (
        None
    )
    miimon: int | None = Field(default=100, ge=0)
    updelay: int | None = Field(default=None, ge=0)
    downdelay: int | None = Field(default=None, ge=0)
    mtu: int | None = Field(default=None, ge=576, le=9216)


class Vlan(Model):
    id: int = Field(ge=1, le=4094)
    parent: LinkName | Mac
    """A bond name of this node, or the MAC of one of its NICs."""
    name: LinkName | None = None
    """Link name; defaults to '<parent>.<id>' for a bond parent, 'vlan<id>' otherwise."""
    addresses: list[str] = Field(default_factory=list)
    """Extra addresses in CIDR form (the node IP itself is placed by ``node.link``)."""
    mtu: int | None = Field(default=None, ge=576, le=9216)

    @property
    def link_name(self) -> str:
        if self.name:
            return self.name
        if ":" in self.parent:
            return f"vlan{self.id}"
        return f"{self.parent}.{self.id}"


class Bmc(Model):
    type: Literal["redfish", "ipmi"] = "redfish"
    address: Host
    port: int | None = Field(default=None, ge=1, le=65535)
    username: NonEmpty
    password_ref: Annotated[str, AfterValidator(lambda v: _secret_ref(v))]
    """Where the password is: env:VAR or file:/path. Never the password itself."""
    insecure: bool = False
    """Skip TLS verification of the BMC (Redfish only)."""
    system_id: str | None = None


def _secret_ref(value: str) -> str:
    scheme, sep, rest = value.partition(":")
    if not sep or scheme not in ("env", "file") or not rest.strip():
        raise ValueError(
            "must be a secret reference 'env:VARIABLE' or 'file:/path' — never a plaintext password"
        )
    if scheme == "env" and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", rest):
        raise ValueError(f"{rest!r} is not an environment variable name")
    return value


class NodeSsh(Model):
    """How ``cloudctl install-ssh`` reaches a node running a rescue or existing Linux system
    (``boot: ssh``): OpenSSH with public-key authentication, host key pinned in the cluster
    directory's ``known_hosts``."""

    address: Host | None = None
    """Where SSH listens (default: the node's ``ip``)."""
    port: int = Field(default=22, ge=1, le=65535)
    user: NonEmpty = "root"
    key_ref: Annotated[str, AfterValidator(lambda v: _secret_ref(v))]
    """The private key: ``file:/path`` or ``env:VAR`` (the key text). Never the key itself."""
    passphrase_ref: Annotated[str, AfterValidator(lambda v: _secret_ref(v))] | None = None
    """The key's passphrase, if it has one (a secret reference)."""
    disk: str | None = None
    """The disk the Talos image is written to (default: the node's ``installDisk``)."""
    method: Literal["image", "kexec"] = "image"
    """``image``: write the factory ``metal`` disk image to ``disk`` and reboot; ``kexec``:
    kexec into the Talos kernel and initramfs (maintenance mode) without touching a disk."""

    @model_validator(mode="after")
    def _disk_path(self) -> NodeSsh:
        if self.disk is not None and not self.disk.startswith("/dev/"):
            raise ValueError(f"disk {self.disk!r} must be a /dev/ path")
        return self


class Node(Model):
    name: DnsLabel
    role: Literal["controlplane", "worker"]
    macs: list[Mac] = Field(min_length=1)
    """NIC MAC addresses; the first one PXE-boots and carries the node IP unless ``link``."""
    ip: IPv4
    install_disk: str | None = None
    install_disk_selector: DiskSelector | None = None
    link: LinkName | None = None
    """Name of the bond or VLAN that carries the node IP (default: the first MAC's NIC)."""
    bonds: list[Bond] = Field(default_factory=list)
    vlans: list[Vlan] = Field(default_factory=list)
    bmc: Bmc | None = None
    boot: Literal["pxe", "ssh"] = "pxe"
    """How the node gets Talos: ``pxe`` (network boot from cloudctl's boot service) or ``ssh``
    (``cloudctl install-ssh`` over the node's ``ssh:`` settings; hosts without PXE)."""
    ssh: NodeSsh | None = None
    firmware: Literal["uefi", "bios"] = "uefi"
    """Boot firmware of the machine: ``uefi`` (default; what current servers ship) or ``bios``
    (legacy). Used by ``cloudctl lab`` to build the node's VM; rendering ignores it."""
    kernel_args: list[NonEmpty] = Field(default_factory=list)
    """Extra kernel arguments for this node's network boot."""
    labels: dict[NonEmpty, str] = Field(default_factory=dict)
    config_patches: list[dict[str, Any]] = Field(default_factory=list)
    """Patches merged into this node's v1alpha1 document, in order (mappings merge, lists
    replace, null or {$patch: delete} deletes; see render/machineconfig/patches.py)."""

    @model_validator(mode="before")
    @classmethod
    def _mac_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and "mac" in data:
            if "macs" in data:
                raise ValueError("give either 'mac' or 'macs', not both")
            data = dict(data)
            data["macs"] = [data.pop("mac")]
        return data

    @model_validator(mode="after")
    def _one_disk(self) -> Node:
        if self.install_disk and self.install_disk_selector:
            raise ValueError("give either installDisk or installDiskSelector, not both")
        if self.install_disk is not None and not self.install_disk.startswith("/dev/"):
            raise ValueError(f"installDisk {self.install_disk!r} must be a /dev/ path")
        return self

    @model_validator(mode="after")
    def _ssh_boot(self) -> Node:
        if self.boot == "ssh":
            if self.ssh is None:
                raise ValueError("boot: ssh needs an 'ssh' section (address, user, keyRef)")
            if self.ssh.method == "image" and not (self.ssh.disk or self.install_disk):
                raise ValueError("boot: ssh writes the Talos image to a disk: give ssh.disk "
                                 "or installDisk (a /dev/ path), or ssh.method: kexec")
        return self

    @property
    def ssh_address(self) -> str:
        """Where the node's SSH server listens (``ssh.address``, else the node IP)."""
        return str(self.ssh.address if self.ssh and self.ssh.address else self.ip)

    @property
    def ssh_disk(self) -> str | None:
        return (self.ssh.disk if self.ssh else None) or self.install_disk

    @property
    def primary_mac(self) -> str:
        return self.macs[0]

    @property
    def is_controlplane(self) -> bool:
        return self.role == "controlplane"


# --------------------------------------------------------------------------- platform


class Component(Model):
    enabled: bool = True
    version: str | None = None
    """Chart / release version; default from cloudctl's platform catalog."""
    values: dict[str, Any] = Field(default_factory=dict)
    """Helm values merged over cloudctl's defaults (deep merge; lists replace)."""


class KubeOvn(Component):
    pod_cidr: IPv4Net = ipaddress.IPv4Network("10.244.0.0/16")
    join_cidr: IPv4Net = ipaddress.IPv4Network("100.64.0.0/16")

    @property
    def pod_gateway(self) -> ipaddress.IPv4Address:
        return self.pod_cidr.network_address + 1


class MetalLBPool(Model):
    name: DnsLabel
    addresses: list[PoolRange] = Field(min_length=1)
    auto_assign: bool = True


class BgpPeer(Model):
    address: IPv4
    asn: int = Field(ge=1, le=4294967295)
    name: DnsLabel | None = None


class MetalLB(Component):
    mode: Literal["l2", "bgp"] = "l2"
    pools: list[MetalLBPool] = Field(default_factory=list)
    my_asn: int | None = Field(default=None, ge=1, le=4294967295)
    peers: list[BgpPeer] = Field(default_factory=list)

    @model_validator(mode="after")
    def _bgp(self) -> MetalLB:
        if self.mode == "bgp" and (self.my_asn is None or not self.peers):
            raise ValueError("mode 'bgp' needs myAsn and at least one peer")
        return self


class KubeVirt(Component):
    cdi: Component = Field(default_factory=Component)


class Linstor(Component):
    operator_version: str | None = None
    """Piraeus operator chart version (the LINSTOR cluster chart uses ``version``)."""


class Platform(Model):
    cilium: Component = Field(default_factory=Component)
    kube_ovn: KubeOvn = Field(default_factory=KubeOvn)
    cert_manager: Component = Field(default_factory=Component)
    linstor: Linstor = Field(default_factory=Linstor)
    kubevirt: KubeVirt = Field(default_factory=KubeVirt)
    metallb: MetalLB = Field(default_factory=MetalLB)
    kamaji: Component = Field(default_factory=Component)
    cluster_api: Component = Field(default_factory=Component)
    """The cluster-api-operator and the Cluster API providers tenants use (core, kubeadm
    bootstrap, Kamaji control plane, KubeVirt infrastructure)."""


class GitOps(Model):
    repo: NonEmpty
    """Git URL Flux pulls from (ssh://, https://, or a file:// path for labs)."""
    branch: NonEmpty = "main"
    path: str = "clusters/{cluster}"
    """Path inside the repository; ``{cluster}`` is replaced by the cluster name."""
    secret_ref: DnsLabel | None = None
    """Name of the Secret in flux-system with the Git credentials."""
    interval: str = "1m"


class Secrets(Model):
    recipients: list[AgeRecipient] = Field(default_factory=list)
    """age public keys the secrets bundle is encrypted to for Git (``cloudctl secrets
    encrypt``); anyone holding one of their identities can decrypt it."""


class Lab(Model):
    """Optional ``lab:`` section: how ``cloudctl lab up`` sizes the VMs (rendering ignores it)."""

    memory_mib: int = Field(default=4096, ge=256, le=1048576)
    cpus: int = Field(default=2, ge=1, le=256)
    system_disk_gib: int = Field(default=20, ge=1, le=65536)
    data_disk_gib: int = Field(default=20, ge=1, le=65536)
    """The second disk (LINSTOR's storage pool)."""
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    """auto: KVM when the host CPU exposes vmx/svm and /dev/kvm opens, TCG otherwise."""


class Hook(Model):
    """One Ansible playbook run through ansible-runner at a stage boundary."""

    playbook: NonEmpty
    """Path to the playbook (relative paths are relative to the inventory file)."""
    limit: str | None = None
    """Ansible host pattern to limit the run to (``--limit``)."""
    extra_vars: dict[str, Any] = Field(default_factory=dict)
    """Variables added to the inventory's own (``cloudctl`` holds the inventory)."""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"playbook": data} if isinstance(data, str) else data


class Hooks(Model):
    """Optional ``hooks:`` section: playbooks ``bootstrap`` runs at stage boundaries, in order;
    a failed task stops the run."""

    before_boot: list[Hook] = Field(default_factory=list)
    after_bootstrap: list[Hook] = Field(default_factory=list)
    after_platform: list[Hook] = Field(default_factory=list)


# --------------------------------------------------------------------------- tenants

_QUANTITY_RE = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$")


def _quantity(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _QUANTITY_RE.match(value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity like 4Gi or 2048Mi")
    return value


Quantity = Annotated[str, BeforeValidator(_quantity)]


class DataVolumeImage(Model):
    """A disk image CDI imports into a DataVolume per VM (HTTP source)."""

    url: NonEmpty


class WorkerImage(Model):
    """The worker VMs' boot disk: exactly one of ``containerDisk`` (an OCI image KubeVirt
    boots from) or ``dataVolume`` (CDI imports ``url`` into a PVC of the pool's ``disk`` size)."""

    container_disk: NonEmpty | None = None
    data_volume: DataVolumeImage | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> WorkerImage:
        if (self.container_disk is None) == (self.data_volume is None):
            raise ValueError("set exactly one of containerDisk or dataVolume")
        return self


class WorkerPool(Model):
    """One MachineDeployment of KubeVirt VMs."""

    name: DnsLabel
    replicas: int = Field(ge=1, le=500)
    cpus: int = Field(default=2, ge=1, le=64)
    memory: Quantity = "4Gi"
    disk: Quantity = "20Gi"
    image: WorkerImage


class TenantControlPlane(Model):
    replicas: int = Field(default=2, ge=1, le=7)
    """Kamaji control-plane pods (API server, controller manager, scheduler) in the management
    cluster; not VMs."""


class TenantNetwork(Model):
    subnet: IPv4Net
    """Kube-OVN subnet the worker VMs attach to (rendered as a Subnet bound to the tenant's
    namespace)."""
    pod_cidr: IPv4Net
    """Pod network inside the tenant cluster."""
    service_cidr: IPv4Net
    """Service network inside the tenant cluster."""


class TenantAddons(Model):
    """Kamaji addons deployed into the tenant cluster by its control plane."""

    core_dns: bool = True
    kube_proxy: bool = True
    konnectivity: bool = True


def tenant_namespace(name: str) -> str:
    """Namespace of tenant ``name``'s objects in the management cluster."""
    return f"tenant-{name}"


class Tenant(Model):
    """A tenant Kubernetes cluster: Kamaji control plane, Cluster API KubeVirt workers."""

    name: DnsLabel
    kubernetes_version: Version
    control_plane: TenantControlPlane = Field(default_factory=TenantControlPlane)
    workers: list[WorkerPool] = Field(min_length=1)
    network: TenantNetwork
    addons: TenantAddons = Field(default_factory=TenantAddons)

    @property
    def namespace(self) -> str:
        """Namespace of the tenant's Cluster API objects in the management cluster."""
        return tenant_namespace(self.name)


# --------------------------------------------------------------------------- root


class Inventory(Model):
    cluster: Cluster
    network: Network
    nodes: list[Node] = Field(min_length=1)
    image: Image = Field(default_factory=Image)
    platform: Platform = Field(default_factory=Platform)
    gitops: GitOps | None = None
    secrets: Secrets = Field(default_factory=Secrets)
    lab: Lab = Field(default_factory=Lab)
    hooks: Hooks = Field(default_factory=Hooks)
    tenants: list[Tenant] = Field(default_factory=list)

    @property
    def talos_minor(self) -> tuple[int, int]:
        major, minor, *_ = self.cluster.talos_version.lstrip("v").split(".")
        return int(major), int(minor)

    @property
    def controlplanes(self) -> list[Node]:
        return [n for n in self.nodes if n.is_controlplane]

    @property
    def workers(self) -> list[Node]:
        return [n for n in self.nodes if not n.is_controlplane]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)
