"""Live facts for the upgrade plan, and the targets the inventory renders to.

Live: each node's running Talos version (``Version``) and the installer image and
kube-apiserver image of its running machine config (COSI ``MachineConfigs.config.talos.dev``,
which needs os:admin), each Kubernetes Node's kubelet version, each HelmRelease's chart version,
values and readiness. Targets: the rendered node configs and HelmReleases.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import yaml

from ..errors import CloudctlError
from ..inventory.models import Inventory, Node
from ..kube.client import Kube
from ..kube.wait import HELMRELEASE_API
from ..render.files import Files
from ..talos.client import Credentials, Endpoint, TalosClient
from .plan import (
    ExtraNode,
    LiveFacts,
    NodeFacts,
    NodeTarget,
    ReleaseFacts,
    ReleaseTarget,
    tag_of,
)

CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"



def v1alpha1_of(text: str) -> dict[str, Any]:
    """The v1alpha1 document of a (multi-document) Talos machine config."""
    for doc in yaml.safe_load_all(text):
        if isinstance(doc, dict) and doc.get("version") == "v1alpha1":
            return doc
    return {}


def config_images(text: str) -> tuple[str, str, str]:
    """(installer image, kubelet tag, kube-apiserver tag) of a machine config."""
    v1 = v1alpha1_of(text)
    machine, cluster = v1.get("machine") or {}, v1.get("cluster") or {}
    image = str((machine.get("install") or {}).get("image") or "")
    kubelet = tag_of(str((machine.get("kubelet") or {}).get("image") or ""))
    api = tag_of(str((cluster.get("apiServer") or {}).get("image") or ""))
    return image, kubelet, api


def node_targets(inv: Inventory, files: Files) -> dict[str, NodeTarget]:
    out = {}
    for n in inv.nodes:
        image, _, _ = config_images(files[f"talos/nodes/{n.name}.yaml"].data.decode())
        out[n.name] = NodeTarget(n.role, inv.cluster.talos_version, image,
                                 inv.cluster.kubernetes_version)
    return out


def release_targets(inv: Inventory, files: Files) -> dict[str, ReleaseTarget]:
    from ..pipeline.platform import rendered_release_specs
    from ..render.gitops import platform_releases

    schemas = {r.name: r.catalog.schemas for r in platform_releases(inv)}
    out = {}
    for name, spec in rendered_release_specs(files).items():
        chart = (spec.get("chart") or {}).get("spec") or {}
        version = str(chart.get("version") or "")
        out[name] = ReleaseTarget(str(chart.get("chart") or ""), version,
                                  dict(spec.get("values") or {}),
                                  version in schemas.get(name, {}))
    return out


def release_facts(objs: Iterable[Mapping[str, Any]]) -> dict[str, ReleaseFacts]:
    from ..kube import release_status

    out = {}
    for o in objs:
        spec = o.get("spec") or {}
        chart = (spec.get("chart") or {}).get("spec") or {}
        out[str(o["metadata"]["name"])] = ReleaseFacts(
            str(chart.get("chart") or ""), str(chart.get("version") or ""),
            dict(spec.get("values") or {}), release_status(o).state == "ready")
    return out


async def _talos_facts(
    node: Node, endpoint: Endpoint, creds: Credentials, timeout: float,
) -> tuple[str | None, str | None, str | None, str]:
    try:
        async with TalosClient(endpoint, creds, timeout=timeout) as c:
            version = (await c.version()).tag
            text = await c.machine_config()
    except CloudctlError as exc:
        return None, None, None, str(exc)
    image, _, api = config_images(text)
    return version, image, (api or None) if node.role == "controlplane" else None, ""


async def gather(
    inv: Inventory,
    dial: Callable[[Node], Endpoint],
    creds: Credentials,
    kube: Kube | None,
    *,
    kube_error: str = "",
    timeout: float = 5.0,
) -> LiveFacts:
    talos = await asyncio.gather(*(_talos_facts(n, dial(n), creds, timeout) for n in inv.nodes))
    kubelets: dict[str, str] = {}
    releases: dict[str, ReleaseFacts] | None = None
    extra: dict[str, ExtraNode] = {}
    registered: set[str] = set()
    names = {n.name for n in inv.nodes}
    if kube is not None:
        try:
            for node in kube.list("v1", "Node"):
                name = str(node["metadata"]["name"])
                registered.add(name)
                status = node.get("status") or {}
                info = status.get("nodeInfo") or {}
                if info.get("kubeletVersion"):
                    kubelets[name] = str(info["kubeletVersion"])
                if name not in names:
                    address = next((str(a.get("address")) for a in status.get("addresses") or []
                                    if a.get("type") == "InternalIP"), "")
                    labels = node["metadata"].get("labels") or {}
                    extra[name] = ExtraNode(name, address, CONTROL_PLANE_LABEL in labels)
            releases = release_facts(kube.list(HELMRELEASE_API, "HelmRelease",
                                               namespace="flux-system"))
        except CloudctlError as exc:
            kube_error = str(exc)
    nodes = {}
    for n, (version, image, api, error) in zip(inv.nodes, talos, strict=True):
        nodes[n.name] = NodeFacts(n.name, n.role, version, image, kubelets.get(n.name), api,
                                  error)
    return LiveFacts(nodes, releases, kube_error, extra, frozenset(registered))
