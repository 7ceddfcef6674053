"""Per-node Talos machine configs and the talosconfig.

Public surface::

    render_machine_configs(inv, bundle) -> Files   # talos/nodes/<node>.yaml + talos/talosconfig
    render_node_config(inv, bundle, node) -> str   # one node's config text
    node_documents(inv, bundle, node) -> list[dict]
    redact_config(text) -> str

Per Talos minor (from the catalog's ``multiDoc`` flag): v1.11 renders one v1alpha1 document
with the network in ``machine.network``; v1.12+ render the v1alpha1 document followed by
HostnameConfig, ResolverConfig, TimeSyncConfig, LinkAliasConfig/LinkConfig/BondConfig/
VLANConfig, Layer2VIPConfig and RegistryMirrorConfig documents. Per-node ``configPatches`` are
merged onto the v1alpha1 document last (semantics in ``patches.py``). Every config is
validated against the vendored schema of its Talos minor before it is returned; a failure is a
:class:`RenderError` naming the node (and the patch, when a patch broke it).
"""

from __future__ import annotations

from typing import Any

from cloudctl.catalog import minor_of, talos_catalog
from cloudctl.errors import RenderError
from cloudctl.inventory.models import Inventory, Node
from cloudctl.render.files import Files, RenderedFile, yaml_docs_file
from cloudctl.secrets import SecretsBundle
from cloudctl.talos_schema import validate_documents

from .network import network_documents
from .patches import merge_patch
from .redact import REDACTED, redact_config
from .talosconfig import TALOSCONFIG_PATH, render_talosconfig
from .v1alpha1 import v1alpha1_document

__all__ = [
    "REDACTED",
    "TALOSCONFIG_PATH",
    "is_multi_doc",
    "node_config_path",
    "node_documents",
    "redact_config",
    "render_machine_configs",
    "render_node_config",
    "render_talosconfig",
]


def node_config_path(node: Node) -> str:
    return f"talos/nodes/{node.name}.yaml"


def is_multi_doc(talos_version: str) -> bool:
    """Whether this Talos minor takes the network as typed documents (v1.12+)."""
    minor = talos_catalog().minor(talos_version)
    if minor is None:
        raise RenderError(
            f"Talos {talos_version}: minor {minor_of(talos_version)} is not in the catalog "
            "(talos/catalog.yaml)"
        )
    return minor.multi_doc


def _registry_documents(inv: Inventory) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1alpha1",
            "kind": "RegistryMirrorConfig",
            "name": host,
            "endpoints": [{"url": url} for url in endpoints],
        }
        for host, endpoints in inv.cluster.registry_mirrors.items()
    ]


def node_documents(inv: Inventory, bundle: SecretsBundle, node: Node) -> list[dict[str, Any]]:
    """The validated documents of one node's machine config, v1alpha1 first."""
    version = inv.cluster.talos_version
    multi_doc = is_multi_doc(version)
    base = v1alpha1_document(inv, bundle, node, multi_doc=multi_doc)
    extra = [*network_documents(inv, node), *_registry_documents(inv)] if multi_doc else []
    problems = validate_documents([base, *extra], version)
    if problems:
        raise RenderError(
            f"node {node.name}: rendered Talos {version} config breaks the schema "
            "(a cloudctl bug):\n" + "\n".join(f"  - {p}" for p in problems)
        )
    doc = base
    for index, patch in enumerate(node.config_patches):
        doc = merge_patch(doc, patch)
        problems = validate_documents([doc, *extra], version)
        if problems:
            raise RenderError(
                f"node {node.name}: configPatches[{index}] makes the Talos {version} config "
                "invalid:\n" + "\n".join(f"  - {p}" for p in problems)
            )
    return [doc, *extra]


def _header(inv: Inventory, node: Node) -> str:
    return (
        f"Talos {inv.cluster.talos_version} machine config for {node.name} "
        f"({node.role}, {node.ip}) in cluster {inv.cluster.name}.\n"
        "Rendered by cloudctl from the inventory; edit the inventory, not this file.\n"
        "Contains secrets (CA keys, tokens): keep it 0600."
    )


def _node_file(inv: Inventory, bundle: SecretsBundle, node: Node) -> RenderedFile:
    docs = node_documents(inv, bundle, node)
    return yaml_docs_file(docs, secret=True, header=_header(inv, node))


def render_node_config(inv: Inventory, bundle: SecretsBundle, node: Node) -> str:
    """One node's machine config as YAML text (contains secrets)."""
    return _node_file(inv, bundle, node).data.decode("utf-8")


def render_machine_configs(inv: Inventory, bundle: SecretsBundle) -> Files:
    """``talos/nodes/<node>.yaml`` for every node (secret) and ``talos/talosconfig``."""
    files: Files = {node_config_path(n): _node_file(inv, bundle, n) for n in inv.nodes}
    files.update(render_talosconfig(inv, bundle))
    return files
