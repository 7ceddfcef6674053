"""Pure rendering: Inventory (+ secrets bundle) -> {relative path: RenderedFile}.

Layout of a render (``cloudctl render -o DIR``)::

    talos/image/       schematic.yaml, schematic.id, profiles/*.yaml, assets.yaml
    talos/nodes/       <node>.yaml machine configs            (0600: they carry keys)
    talos/talosconfig  admin client config                    (0600)
    gitops/            flux-system/ and platform/ (no secrets; meant for Git)
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import CloudctlError
from ..inventory.models import Inventory
from ..secrets.bundle import SecretsBundle
from .files import Files, RenderedFile

__all__ = ["Files", "RenderedFile", "render_all"]


FORK_FROM_NODES = 32
"""Racks from this size up render their machine configs in a forked child (see render_all)."""


class _BundleFailed:
    """The child could not load the bundle: its error, to be raised before any other."""

    def __init__(self, error: CloudctlError) -> None:
        self.error = error


def render_all(inv: Inventory, bundle: SecretsBundle | Callable[[], SecretsBundle]) -> Files:
    """Every file of the render.

    ``bundle`` may be a function returning it (``SecretsStore.load``). From
    ``FORK_FROM_NODES`` nodes up, the machine configs (a third of a 1,000-node render, most of
    it building and checking one config per node) are rendered by a forked child (see
    ``forked.py``) on the second core, bundle loading included, while this process renders the
    image definitions and the GitOps tree, which need no secrets. Errors keep their order:
    the bundle's first (as when it was loaded before rendering), then image, machine configs,
    GitOps.
    """
    from .gitops import render_gitops
    from .image import render_image
    from .machineconfig import render_machine_configs

    load = bundle if callable(bundle) else (lambda: bundle)

    def configs() -> Files | _BundleFailed:
        try:
            loaded = load()
        except CloudctlError as exc:
            return _BundleFailed(exc)
        return render_machine_configs(inv, loaded)

    if len(inv.nodes) >= FORK_FROM_NODES:
        from .forked import start

        pending = start(configs)
    else:
        pending = configs
    gitops: Files = {}
    image: Files = {}
    errors: dict[str, Exception] = {}
    for name, renderer, into in (
        ("gitops", render_gitops, gitops),
        ("image", render_image, image),
    ):
        try:
            into.update(renderer(inv))
        except Exception as exc:  # raised below, in the order the errors come in
            errors[name] = exc
    try:
        machine = pending()
    except CloudctlError as exc:
        errors["machine"] = exc
        machine = {}
    if isinstance(machine, _BundleFailed):
        raise machine.error
    for name in ("image", "machine", "gitops"):
        if name in errors:
            raise errors[name]
    files: Files = {}
    for part in (image, machine, gitops):
        overlap = set(files) & set(part)
        if overlap:
            raise AssertionError(f"renderers wrote the same paths: {sorted(overlap)}")
        files.update(part)
    return files
