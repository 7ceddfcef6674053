"""``talos/talosconfig``: the admin client config for talosctl and cloudctl's Talos client."""

from __future__ import annotations

from cloudctl.inventory.models import Inventory
from cloudctl.render.files import Files, text_file
from cloudctl.secrets import SecretsBundle, talosconfig

TALOSCONFIG_PATH = "talos/talosconfig"


def render_talosconfig(inv: Inventory, bundle: SecretsBundle) -> Files:
    """Context = cluster name; endpoints = control-plane IPs; nodes = every node IP (secret:
    it holds the admin client key)."""
    text = talosconfig(
        bundle,
        context=inv.cluster.name,
        endpoints=[str(n.ip) for n in inv.controlplanes],
        nodes=[str(n.ip) for n in inv.nodes],
    )
    return {TALOSCONFIG_PATH: text_file(text, secret=True)}
