"""The ``version: v1alpha1`` document: what ``talosctl gen config`` emits, plus Cozystack's patches.

Layout and secrets follow ``talosctl gen config`` (reference/talos-api.md §3.2): control planes
carry every CA with its key (OS, Kubernetes, aggregator, service account, etcd), workers only the
OS and Kubernetes CA certificates. Crt/key values are base64 of the PEM, as in ``secrets.yaml``.
On top come the Cozystack-grade settings (reference/cozystack.md §2), expressed directly in the
full document rather than as patches. The control-plane label
``node.kubernetes.io/exclude-from-external-load-balancers`` that gen config adds and Cozystack
removes with ``$patch: delete`` is simply never written.

Departures from gen config, on purpose:
- ``cluster.discovery.enabled: false`` on every node, not only the control planes: a worker
  registering with a discovery service the control planes ignore gains nothing and would need
  Internet access.
- ``machine.features.stableHostname`` is not set on v1.11: the hostname is always static.
- The network, hostname, resolvers, time servers and registry mirrors live in ``machine.*`` on
  v1.11 and in typed documents on v1.12+ (see ``network.py``); never in both.
"""

from __future__ import annotations

import base64
from typing import Any

from cloudctl.inventory.models import Inventory, Node
from cloudctl.render.schematic import installer_image
from cloudctl.secrets import SecretsBundle
from cloudctl.secrets.pki import CertAndKey

from .network import legacy_network

KUBEPRISM_PORT = 7445
MAX_PODS = 512
LOCALHOST = "127.0.0.1"
EXCLUDE_FROM_LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"

KERNEL_MODULES: tuple[dict[str, Any], ...] = (
    {"name": "openvswitch"},
    {"name": "drbd", "parameters": ["usermode_helper=disabled"]},
    {"name": "drbd_transport_tcp"},
    {"name": "zfs"},
    {"name": "spl"},
    {"name": "vfio_pci"},
    {"name": "vfio_iommu_type1"},
)

SYSCTLS: dict[str, str] = {
    # neighbour table sizes for large L2 segments (Cozystack)
    "net.ipv4.neigh.default.gc_thresh1": "4096",
    "net.ipv4.neigh.default.gc_thresh2": "8192",
    "net.ipv4.neigh.default.gc_thresh3": "16384",
    # DRBD/LINSTOR: avoid TCP port exhaustion during reconnect storms (talm cozystack preset)
    "net.ipv4.tcp_orphan_retries": "3",
    "net.ipv4.tcp_fin_timeout": "30",
    "net.core.netdev_max_backlog": "5000",
    "net.core.netdev_budget": "600",
    "net.core.netdev_budget_usecs": "8000",
}

CRI_CUSTOMIZATION_PATH = "/etc/cri/conf.d/20-customization.part"
CRI_CUSTOMIZATION = """\
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    device_ownership_from_security_context = true
  [plugins."io.containerd.cri.v1.runtime"]
    device_ownership_from_security_context = true
"""

LVM_CONF_PATH = "/etc/lvm/lvm.conf"
LVM_CONF = """\
backup {
    backup = 0
    archive = 0
}
devices {
    global_filter = [ "r|^/dev/drbd.*|", "r|^/dev/dm-.*|", "r|^/dev/zd.*|", "r|^/dev/loop.*|" ]
}
"""

FILE_MODE = 0o644

POD_SECURITY_ADMISSION: dict[str, Any] = {
    "name": "PodSecurity",
    "configuration": {
        "apiVersion": "pod-security.admission.config.k8s.io/v1alpha1",
        "defaults": {
            "audit": "restricted",
            "audit-version": "latest",
            "enforce": "baseline",
            "enforce-version": "latest",
            "warn": "restricted",
            "warn-version": "latest",
        },
        "exemptions": {"namespaces": ["kube-system"], "runtimeClasses": [], "usernames": []},
        "kind": "PodSecurityConfiguration",
    },
}

AUDIT_POLICY: dict[str, Any] = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "rules": [{"level": "Metadata"}],
}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _ca(ck: CertAndKey, *, with_key: bool) -> dict[str, str]:
    out = {"crt": _b64(ck.crt)}
    if with_key:
        assert ck.key is not None, "CA without key in the secrets bundle"
        out["key"] = _b64(ck.key)
    return out


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def kubernetes_images(version: str) -> dict[str, str]:
    """Component images as ``talosctl gen config --kubernetes-version`` sets them."""
    v = "v" + version.lstrip("v")
    return {
        "kubelet": f"ghcr.io/siderolabs/kubelet:{v}",
        "apiServer": f"registry.k8s.io/kube-apiserver:{v}",
        "controllerManager": f"registry.k8s.io/kube-controller-manager:{v}",
        "scheduler": f"registry.k8s.io/kube-scheduler:{v}",
        "proxy": f"registry.k8s.io/kube-proxy:{v}",
    }


def api_cert_sans(inv: Inventory) -> list[str]:
    """SANs of the Kubernetes API (and control-plane apid) certificates."""
    sans = [inv.cluster.api_host]
    if inv.cluster.vip is not None:
        sans.append(str(inv.cluster.vip))
    sans.append(LOCALHOST)
    sans.extend(inv.cluster.cert_sans)
    return _dedupe([s for s in sans if s])


def _install(inv: Inventory, node: Node, multi_doc: bool) -> dict[str, Any]:
    install: dict[str, Any] = {}
    if node.install_disk_selector is not None:
        install["diskSelector"] = node.install_disk_selector.model_dump(
            by_alias=True, exclude_none=True
        )
    else:
        install["disk"] = node.install_disk or "/dev/sda"
    install["image"] = installer_image(inv)
    install["wipe"] = False
    if multi_doc:
        install["grubUseUKICmdline"] = True
    return install


def _features(multi_doc: bool) -> dict[str, Any]:
    features: dict[str, Any] = {}
    if not multi_doc:
        # locked to true (and removed from the schema) from v1.12 on
        features["rbac"] = True
        features["apidCheckExtKeyUsage"] = True
    features["diskQuotaSupport"] = True
    features["kubePrism"] = {"enabled": True, "port": KUBEPRISM_PORT}
    features["hostDNS"] = {"enabled": True, "forwardKubeDNSToHost": True}
    return features


def _machine(inv: Inventory, bundle: SecretsBundle, node: Node, multi_doc: bool) -> dict[str, Any]:
    cp = node.is_controlplane
    images = kubernetes_images(inv.cluster.kubernetes_version)
    subnet = str(inv.network.subnet)
    machine: dict[str, Any] = {
        "type": node.role,
        "token": bundle.trustd_token,
        "ca": _ca(bundle.os, with_key=cp),
        "certSANs": api_cert_sans(inv) if cp else [LOCALHOST],
        "kubelet": {
            "image": images["kubelet"],
            "extraConfig": {"maxPods": MAX_PODS},
            "defaultRuntimeSeccompProfileEnabled": True,
            "nodeIP": {"validSubnets": [subnet]},
            "disableManifestsDirectory": True,
        },
    }
    if not multi_doc:
        machine["network"] = legacy_network(inv, node)
    machine["install"] = _install(inv, node, multi_doc)
    machine["files"] = [
        {
            "content": CRI_CUSTOMIZATION,
            "permissions": FILE_MODE,
            "path": CRI_CUSTOMIZATION_PATH,
            "op": "create",
        },
        {"content": LVM_CONF, "permissions": FILE_MODE, "path": LVM_CONF_PATH, "op": "overwrite"},
    ]
    if not multi_doc:
        if inv.network.ntp:
            machine["time"] = {"servers": list(inv.network.ntp)}
        if inv.cluster.registry_mirrors:
            machine["registries"] = {
                "mirrors": {
                    host: {"endpoints": list(endpoints)}
                    for host, endpoints in inv.cluster.registry_mirrors.items()
                }
            }
    machine["sysctls"] = dict(SYSCTLS)
    machine["features"] = _features(multi_doc)
    machine["kernel"] = {"modules": [dict(m) for m in KERNEL_MODULES]}
    if node.labels:
        machine["nodeLabels"] = dict(node.labels)
    return machine


def _cluster(inv: Inventory, bundle: SecretsBundle, node: Node) -> dict[str, Any]:
    cp = node.is_controlplane
    c = inv.cluster
    images = kubernetes_images(c.kubernetes_version)
    subnet = str(inv.network.subnet)
    cluster: dict[str, Any] = {
        "id": bundle.cluster_id,
        "secret": bundle.cluster_secret,
        "controlPlane": {"endpoint": c.api_url},
        "clusterName": c.name,
        "network": {
            "cni": {"name": "none"},
            "dnsDomain": c.domain,
            "podSubnets": [str(n) for n in c.pod_subnets],
            "serviceSubnets": [str(n) for n in c.service_subnets],
        },
        "token": bundle.bootstrap_token,
    }
    if cp:
        cluster["secretboxEncryptionSecret"] = bundle.secretbox_encryption_secret
    cluster["ca"] = _ca(bundle.k8s, with_key=cp)
    if cp:
        cluster["aggregatorCA"] = _ca(bundle.k8s_aggregator, with_key=True)
        cluster["serviceAccount"] = {"key": _b64(bundle.k8s_service_account_key)}
        cluster["apiServer"] = {
            "image": images["apiServer"],
            "certSANs": api_cert_sans(inv),
            "admissionControl": [POD_SECURITY_ADMISSION],
            "auditPolicy": AUDIT_POLICY,
        }
        cluster["controllerManager"] = {
            "image": images["controllerManager"],
            "extraArgs": {"bind-address": "0.0.0.0"},
        }
        cluster["proxy"] = {"disabled": True, "image": images["proxy"]}
        cluster["scheduler"] = {
            "image": images["scheduler"],
            "extraArgs": {"bind-address": "0.0.0.0"},
        }
    cluster["discovery"] = {"enabled": False}
    if cp:
        etcd: dict[str, Any] = {"ca": _ca(bundle.etcd, with_key=True)}
        if c.etcd_quota_backend_bytes is not None:
            etcd["extraArgs"] = {"quota-backend-bytes": str(c.etcd_quota_backend_bytes)}
        etcd["advertisedSubnets"] = [subnet]
        cluster["etcd"] = etcd
        cluster["extraManifests"] = []
        cluster["inlineManifests"] = []
        cluster["allowSchedulingOnControlPlanes"] = c.allow_scheduling_on_control_planes
    return cluster


def v1alpha1_document(
    inv: Inventory, bundle: SecretsBundle, node: Node, *, multi_doc: bool
) -> dict[str, Any]:
    """The full v1alpha1 document of one node (before per-node patches)."""
    return {
        "version": "v1alpha1",
        "debug": False,
        # deprecated and absent from the schema, but gen config still writes it and Talos
        # refuses an explicit ``false`` (".persist should be enabled")
        "persist": True,
        "machine": _machine(inv, bundle, node, multi_doc),
        "cluster": _cluster(inv, bundle, node),
    }
