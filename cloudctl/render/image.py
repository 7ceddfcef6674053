"""The Talos image definition of an inventory: schematic, imager profiles and boot-asset URLs.

``render_image(inv)`` writes, under ``talos/image/``:

* ``schematic.yaml`` / ``schematic.id`` — the Image Factory schematic (canonical form) and its ID;
* ``profiles/{installer,iso,kernel,initramfs,metal,nocloud}.yaml`` — imager profiles for the
  inventory's Talos release, architecture and SecureBoot setting, with the inventory's system
  extensions pinned (``tag@sha256:digest``) from cloudctl's release catalog. Building them with
  ``ghcr.io/siderolabs/imager`` gives the same assets as the factory, without the factory;
* ``assets.yaml`` — where the factory serves those assets for this schematic, and the installer
  image that ``machine.install.image`` and upgrades use (the factory's, or the own registry's).

``asset_urls(inv)`` is the same URL set as a value, for the boot service to download the kernel
and initramfs. Everything here is pure: the only input besides the inventory is the catalog.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..catalog import TalosCatalog, talos_catalog
from ..errors import RenderError
from ..inventory.models import Inventory
from .files import Files, text_file, yaml_file
from .profiles import PROFILE_NAMES, imager_profile, output_name, validate_profile
from .schematic import installer_image, schematic_for

IMAGE_DIR = "talos/image"
OFFICIAL_FACTORY_HOST = "factory.talos.dev"
OFFICIAL_PXE_URL = "https://pxe.talos.dev"


@dataclass(frozen=True)
class AssetUrls:
    """Image Factory URLs of one schematic + Talos version + architecture."""

    schematic_id: str
    version: str
    arch: str
    secureboot: bool
    factory_url: str
    kernel: str
    initramfs: str
    cmdline: str
    iso: str
    metal: str
    nocloud: str
    uki: str | None
    """Only with SecureBoot: the signed UKI a SecureBoot PXE client boots."""
    pxe_script: str
    installer: str
    installer_source: str


def _base_url(url: str) -> str:
    url = url.strip().rstrip("/")
    return url if re.match(r"^[a-z][a-z0-9+.-]*://", url) else f"https://{url}"


def _pxe_base(factory_url: str) -> str:
    """The official factory serves iPXE scripts from pxe.talos.dev; a self-hosted one itself."""
    host = re.sub(r"^[a-z][a-z0-9+.-]*://", "", factory_url).split("/", 1)[0]
    return OFFICIAL_PXE_URL if host == OFFICIAL_FACTORY_HOST else factory_url


def asset_urls(inv: Inventory) -> AssetUrls:
    """Factory URLs for the inventory's schematic, Talos release and architecture."""
    schematic_id = schematic_for(inv).id
    version = inv.cluster.talos_version
    arch = inv.image.arch
    sb = "-secureboot" if inv.image.secureboot else ""
    factory = _base_url(inv.image.installer.factory_url)
    image = f"{factory}/image/{schematic_id}/{version}"
    return AssetUrls(
        schematic_id=schematic_id,
        version=version,
        arch=arch,
        secureboot=inv.image.secureboot,
        factory_url=factory,
        kernel=f"{image}/kernel-{arch}",
        initramfs=f"{image}/initramfs-{arch}.xz",
        cmdline=f"{image}/cmdline-metal-{arch}{sb}",
        iso=f"{image}/metal-{arch}{sb}.iso",
        metal=f"{image}/metal-{arch}{sb}.raw.xz",
        nocloud=f"{image}/nocloud-{arch}{sb}.raw.xz",
        uki=f"{image}/metal-{arch}-secureboot-uki.efi" if inv.image.secureboot else None,
        pxe_script=f"{_pxe_base(factory)}/pxe/{schematic_id}/{version}/metal-{arch}{sb}",
        installer=installer_image(inv),
        installer_source=inv.image.installer.source,
    )


def pinned_extension_refs(inv: Inventory, catalog: TalosCatalog | None = None) -> list[str]:
    """The inventory's extensions as pinned image references for its Talos release.

    Order is the schematic's (sorted names, as the factory resolves them). Aliases such as
    ``siderolabs/i915-ucode`` resolve to the current name. Raises RenderError naming the field
    when the release or an extension is not in the catalog.
    """
    catalog = catalog or talos_catalog()
    version = inv.cluster.talos_version
    release = catalog.release(version)
    minor = catalog.minor(version)
    if release is None or minor is None:
        known = ", ".join(sorted(catalog.releases)) or "(none)"
        raise RenderError(
            f"cluster.talosVersion: Talos {version} has no pinned extension images in "
            f"talos/catalog.yaml (known releases: {known})"
        )
    refs: list[str] = []
    seen: set[str] = set()
    for name in schematic_for(inv).official_extensions:
        canonical = minor.canonical_extension(name)
        if canonical in seen:
            continue
        seen.add(canonical)
        pinned = release.extensions.get(canonical)
        if pinned is None:
            index = list(inv.image.extensions).index(name)
            raise RenderError(
                f"image.extensions[{index}]: {name!r} has no pinned image for Talos {version} "
                f"in talos/catalog.yaml (pinned: {', '.join(sorted(release.extensions))})"
            )
        refs.append(pinned.image_ref)
    return refs


def image_profiles(
    inv: Inventory, catalog: TalosCatalog | None = None
) -> dict[str, dict[str, Any]]:
    """The six imager profiles of the inventory, keyed by profile name."""
    refs = pinned_extension_refs(inv, catalog)
    profiles: dict[str, dict[str, Any]] = {}
    for name in PROFILE_NAMES:
        secureboot = inv.image.secureboot and name not in ("kernel", "initramfs")
        profile = imager_profile(
            name,
            version=inv.cluster.talos_version,
            arch=inv.image.arch,
            secureboot=secureboot,
            extension_refs=refs,
            extra_kernel_args=inv.image.extra_kernel_args,
        )
        problems = validate_profile(profile)
        if problems:
            raise RenderError(
                f"{IMAGE_DIR}/profiles/{name}.yaml breaks the imager's rules: "
                + "; ".join(problems)
            )
        profiles[name] = profile
    return profiles


def _profile_header(name: str, version: str, disk: bool) -> str:
    mounts = "-v /dev:/dev --privileged " if disk else ""
    return (
        f"Talos imager profile '{name}', generated by cloudctl from the inventory; do not edit.\n"
        f"Build: docker run --rm -i {mounts}-v $PWD/_out:/out "
        f"ghcr.io/siderolabs/imager:{version} - < {name}.yaml"
    )


def _assets_document(urls: AssetUrls, profiles: dict[str, dict[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schematic": urls.schematic_id,
        "talosVersion": urls.version,
        "arch": urls.arch,
        "secureboot": urls.secureboot,
        "factory": urls.factory_url,
        "kernel": urls.kernel,
        "initramfs": urls.initramfs,
        "cmdline": urls.cmdline,
        "iso": urls.iso,
        "metal": urls.metal,
        "nocloud": urls.nocloud,
    }
    if urls.uki:
        doc["uki"] = urls.uki
    doc["pxeScript"] = urls.pxe_script
    doc["installer"] = {"source": urls.installer_source, "image": urls.installer}
    doc["imagerOutputs"] = {name: output_name(p) for name, p in profiles.items()}
    return doc


def render_image(inv: Inventory, catalog: TalosCatalog | None = None) -> Files:
    """``talos/image/``: schematic, its ID, six imager profiles and the asset URLs."""
    schematic = schematic_for(inv)
    profiles = image_profiles(inv, catalog)
    files: Files = {
        f"{IMAGE_DIR}/schematic.yaml": text_file(schematic.canonical_yaml()),
        f"{IMAGE_DIR}/schematic.id": text_file(schematic.id + "\n"),
    }
    for name, profile in profiles.items():
        files[f"{IMAGE_DIR}/profiles/{name}.yaml"] = yaml_file(
            profile,
            header=_profile_header(
                name, inv.cluster.talos_version, profile["output"]["kind"] == "image"
            ),
        )
    files[f"{IMAGE_DIR}/assets.yaml"] = yaml_file(
        _assets_document(asset_urls(inv), profiles),
        header="Talos boot assets of this inventory's schematic (generated by cloudctl).",
    )
    return files
