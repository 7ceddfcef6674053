"""Pure rendering: Inventory (+ secrets bundle) -> {relative path: RenderedFile}.

Layout of a render (``cloudctl render -o DIR``)::

    talos/image/       schematic.yaml, schematic.id, profiles/*.yaml, assets.yaml
    talos/nodes/       <node>.yaml machine configs            (0600: they carry keys)
    talos/talosconfig  admin client config                    (0600)
    gitops/            flux-system/ and platform/ (no secrets; meant for Git)
"""

from __future__ import annotations

from ..inventory.models import Inventory
from ..secrets.bundle import SecretsBundle
from .files import Files, RenderedFile

__all__ = ["Files", "RenderedFile", "render_all"]


def render_all(inv: Inventory, bundle: SecretsBundle) -> Files:
    from .gitops import render_gitops
    from .image import render_image
    from .machineconfig import render_machine_configs

    files: Files = {}
    for part in (render_image(inv), render_machine_configs(inv, bundle), render_gitops(inv)):
        overlap = set(files) & set(part)
        if overlap:
            raise AssertionError(f"renderers wrote the same paths: {sorted(overlap)}")
        files.update(part)
    return files
