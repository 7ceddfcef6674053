"""Pure rendering: Inventory (+ secrets bundle) -> {relative path: RenderedFile}.

Layout of a render (``cloudctl render -o DIR``)::

    talos/image/       schematic.yaml, schematic.id, profiles/*.yaml, assets.yaml
    talos/nodes/       <node>.yaml machine configs            (0600: they carry keys)
    talos/talosconfig  admin client config                    (0600)
    gitops/            flux-system/ and platform/ (no secrets; meant for Git)
"""

from __future__ import annotations

from collections.abc import Callable

from ..inventory.models import Inventory
from ..secrets.bundle import SecretsBundle
from .files import Files, RenderedFile

__all__ = ["Files", "RenderedFile", "render_all"]


def render_all(inv: Inventory, bundle: SecretsBundle | Callable[[], SecretsBundle]) -> Files:
    """Every file of the render.

    ``bundle`` may be a function returning it (``SecretsStore.load``): it then runs in a forked
    child (see ``forked.py``) while the GitOps tree, which needs no secrets, is rendered here.
    Loading the keys is mostly ``cryptography`` checking the RSA-4096 service-account key, C
    code holding the GIL for ~0.25 s, so on a second core the two overlap. Errors keep their
    order: the bundle's first (as when it was loaded before rendering), then image, machine
    configs, GitOps.
    """
    from .gitops import render_gitops
    from .image import render_image
    from .machineconfig import render_machine_configs

    gitops: Files | None = None
    gitops_error: Exception | None = None
    if callable(bundle):
        from .forked import start

        loaded = start(bundle)
        try:
            gitops = render_gitops(inv)
        except Exception as exc:  # raised below, after the errors that came first
            gitops_error = exc
        bundle = loaded()
    files: Files = {}
    image, machine = render_image(inv), render_machine_configs(inv, bundle)
    if gitops_error is not None:
        raise gitops_error
    for part in (image, machine, gitops if gitops is not None else render_gitops(inv)):
        overlap = set(files) & set(part)
        if overlap:
            raise AssertionError(f"renderers wrote the same paths: {sorted(overlap)}")
        files.update(part)
    return files
