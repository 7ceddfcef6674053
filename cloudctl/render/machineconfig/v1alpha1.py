"""The ``version: v1alpha1`` document: what ``talosctl gen config`` emits, plus Cozystack's patches.

Layout and secrets follow ``talosctl gen config`` (reference/talos-api.md §3.2): control planes
carry every CA with its key (OS, Kubernetes, aggregator, service account, etcd), workers only the
OS and Kubernetes CA certificates. Crt/key values are base64 of the PEM, as in ``secrets.yaml``.
On top come the Cozystack-grade settings (reference/cozystack.md §2) of ``talos/preset.yaml``
(kernel modules, sysctls, files, kubelet max pods, KubePrism, Pod Security admission, audit
policy), expressed directly in the full document rather than as patches. The control-plane label
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
from cloudctl.preset import preset
from cloudctl.render.schematic import installer_image
from cloudctl.secrets import SecretsBundle
from cloudctl.secrets.pki import CertAndKey

from .network import legacy_network

LOCALHOST = "127.0.0.1"
EXCLUDE_FROM_LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"


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
    features["kubePrism"] = {"enabled": True, "port": preset().kube_prism.port}
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
            "extraConfig": {"maxPods": preset().max_pods},
            "defaultRuntimeSeccompProfileEnabled": True,
            "nodeIP": {"validSubnets": [subnet]},
            "disableManifestsDirectory": True,
        },
    }
    if not multi_doc:
        machine["network"] = legacy_network(inv, node)
    machine["install"] = _install(inv, node, multi_doc)
    machine["files"] = preset().files()
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
    machine["sysctls"] = preset().sysctls()
    machine["features"] = _features(multi_doc)
    machine["kernel"] = {"modules": preset().kernel_modules()}
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
            "admissionControl": preset().admission_control(),
            "auditPolicy": preset().audit_policy(),
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
