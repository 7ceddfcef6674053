"""Talos image definitions: imager profiles, their validation, schematic files and asset URLs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudctl.catalog import parse_version, talos_catalog
from cloudctl.errors import RenderError
from cloudctl.inventory.models import DEFAULT_EXTENSIONS, Inventory
from cloudctl.inventory.synthetic import synthetic_inventory
from cloudctl.render.image import (
    IMAGE_DIR,
    AssetUrls,
    asset_urls,
    image_profiles,
    pinned_extension_refs,
    render_image,
)
from cloudctl.render.profiles import (
    PROFILE_NAMES,
    default_bootloader,
    default_disk_size,
    imager_profile,
    output_name,
    validate_profile,
)
from cloudctl.render.schematic import installer_image, schematic_for

FIXTURES = Path(__file__).resolve().parent.parent / "golden" / "imager-profiles"
CATALOG = talos_catalog()
RELEASES = sorted(CATALOG.releases, key=parse_version)

# upstream fixture -> (profile name, secureboot)
FIXTURE_PROFILES: dict[str, tuple[str, bool]] = {
    "installer": ("installer", False),
    "iso": ("iso", False),
    "metal": ("metal", False),
    "nocloud": ("nocloud", False),
    "secureboot-installer": ("installer", True),
    "secureboot-iso": ("iso", True),
    "secureboot-metal": ("metal", True),
}


def _fixture_cases() -> list[tuple[str, str, bool, str, str]]:
    cases = []
    for path in sorted(FIXTURES.glob("*.yaml")):
        stem = path.stem  # e.g. secureboot-iso-amd64-1.13.0
        rest, version = stem.rsplit("-", 1)
        kind, arch = rest.rsplit("-", 1)
        name, secureboot = FIXTURE_PROFILES[kind]
        cases.append((path.name, name, secureboot, arch, version))
    return cases


FIXTURE_CASES = _fixture_cases()


def inventory(version: str = "v1.13.6", **image: Any) -> Inventory:
    doc = synthetic_inventory(3, talos_version=version)
    if image:
        doc["image"] = image
    return Inventory.model_validate(doc)


def _profile_docs(files: dict[str, Any]) -> dict[str, dict[str, Any]]:
    prefix = f"{IMAGE_DIR}/profiles/"
    return {
        k[len(prefix) : -len(".yaml")]: yaml.safe_load(v.data)
        for k, v in files.items()
        if k.startswith(prefix)
    }


# ----------------------------------------------------------------- upstream golden profiles


def test_fixture_set_is_complete() -> None:
    names = {c[0] for c in FIXTURE_CASES}
    for required in ("installer", "metal", "iso", "nocloud"):
        assert f"{required}-amd64-1.13.0.yaml" in names
    assert len(FIXTURE_CASES) == 12


@pytest.mark.parametrize(
    ("fixture", "name", "secureboot", "arch", "version"),
    FIXTURE_CASES,
    ids=[c[0] for c in FIXTURE_CASES],
)
def test_profiles_match_upstream_defaults(
    fixture: str, name: str, secureboot: bool, arch: str, version: str
) -> None:
    """With no extensions, our profile is the upstream FillDefaults output, field for field.

    The fixtures give the version as upstream's tests do (``1.13.0``) and compress disk images
    with the imager default ``.zst``; both are parameters here (cloudctl renders ``v1.13.0``-style
    release tags and ``.xz``, see test_rendered_profiles_use_release_tags).
    """
    expected = yaml.safe_load((FIXTURES / fixture).read_text())
    ours = imager_profile(name, version=version, arch=arch, secureboot=secureboot,
                          disk_out_format=".zst")
    assert ours == expected
    assert list(ours) == list(expected)  # same key order as the imager's struct
    assert list(ours["input"]) == list(expected["input"])
    assert validate_profile(expected) == []
    assert validate_profile(ours) == []


def test_bootloader_and_disk_size_rules() -> None:
    assert default_bootloader("v1.13.6", "amd64", False) == "dual-boot"
    assert default_bootloader("v1.13.6", "arm64", False) == "sd-boot"
    assert default_bootloader("v1.13.6", "amd64", True) == "sd-boot"
    assert default_bootloader("v1.9.0", "amd64", False) == "grub"
    # 2 GB boot partition from 1.11: 1.12.0 upstream fixture (metal-amd64-1.12.0) has 4453302272
    assert default_disk_size("v1.12.0", "dual-boot") == 4453302272
    assert default_disk_size("v1.11.3", "dual-boot") == 4453302272
    assert default_disk_size("v1.13.6", "sd-boot") == 2355101696
    assert default_disk_size("v1.9.0", "grub") == 1306525696


# ----------------------------------------------------------------- rendered profiles


@pytest.mark.parametrize("version", RELEASES)
@pytest.mark.parametrize("arch", ["amd64", "arm64"])
@pytest.mark.parametrize("secureboot", [False, True])
def test_every_rendered_profile_is_valid_and_pinned(
    version: str, arch: str, secureboot: bool
) -> None:
    inv = inventory(version, arch=arch, secureboot=secureboot, extraKernelArgs=["console=ttyS0"])
    files = render_image(inv)
    docs = _profile_docs(files)
    assert sorted(docs) == sorted(PROFILE_NAMES)
    release = CATALOG.releases[version]
    want_refs = [release.extensions[n].image_ref for n in sorted(DEFAULT_EXTENSIONS)]
    for name, doc in docs.items():
        assert validate_profile(doc) == [], name
        assert doc["version"] == version
        assert doc["arch"] == arch
        assert doc["secureboot"] is (secureboot and name not in ("kernel", "initramfs"))
        refs = [e["imageRef"] for e in doc["input"].get("systemExtensions", [])]
        assert refs == ([] if name == "kernel" else want_refs), name
        kargs = doc.get("customization", {}).get("extraKernelArgs")
        assert kargs == (None if name in ("kernel", "initramfs") else ["console=ttyS0"]), name
    assert docs["nocloud"]["platform"] == "nocloud"
    assert docs["metal"]["output"]["outFormat"] == ".xz"
    assert output_name(docs["metal"]) == f"metal-{arch}{'-secureboot' if secureboot else ''}.raw.xz"


def test_rendered_profiles_use_release_tags() -> None:
    docs = _profile_docs(render_image(inventory("v1.13.6")))
    for doc in docs.values():
        assert doc["version"] == "v1.13.6"
        base = doc["input"]["baseInstaller"]["imageRef"]
        assert base == "ghcr.io/siderolabs/installer-base:v1.13.6"
    metal = docs["metal"]["output"]
    assert metal == {
        "kind": "image",
        "imageOptions": {"diskSize": 4453302272, "diskFormat": "raw", "bootloader": "dual-boot"},
        "outFormat": ".xz",
    }
    assert docs["kernel"]["output"] == {"kind": "kernel", "outFormat": "raw"}
    assert docs["initramfs"]["output"] == {"kind": "initramfs", "outFormat": "raw"}
    assert docs["installer"]["output"] == {"kind": "installer", "outFormat": "raw"}


def test_render_image_files() -> None:
    inv = inventory("v1.13.6")
    files = render_image(inv)
    s = schematic_for(inv)
    assert set(files) == {
        f"{IMAGE_DIR}/schematic.yaml",
        f"{IMAGE_DIR}/schematic.id",
        f"{IMAGE_DIR}/assets.yaml",
        *(f"{IMAGE_DIR}/profiles/{n}.yaml" for n in PROFILE_NAMES),
    }
    assert files[f"{IMAGE_DIR}/schematic.yaml"].data == s.canonical_yaml().encode()
    assert files[f"{IMAGE_DIR}/schematic.id"].data == (s.id + "\n").encode()
    assert not any(f.secret for f in files.values())
    # the YAML on disk is exactly the profile the renderer validated
    assert _profile_docs(files) == image_profiles(inv)
    metal_text = files[f"{IMAGE_DIR}/profiles/metal.yaml"].data.decode()
    assert metal_text.startswith("# Talos imager profile 'metal'")
    assert "ghcr.io/siderolabs/imager:v1.13.6 - < metal.yaml" in metal_text


def test_render_is_deterministic() -> None:
    a = render_image(inventory("v1.12.7", extraKernelArgs=["a=1", "b"]))
    b = render_image(inventory("v1.12.7", extraKernelArgs=["a=1", "b"]))
    assert {k: v.data for k, v in a.items()} == {k: v.data for k, v in b.items()}
    # the inventory's extension order does not change anything
    reordered = list(reversed(DEFAULT_EXTENSIONS))
    c = render_image(inventory("v1.12.7", extraKernelArgs=["a=1", "b"], extensions=reordered))
    assert {k: v.data for k, v in a.items()} == {k: v.data for k, v in c.items()}


def test_aliases_and_extra_extensions_resolve_to_pins() -> None:
    inv = inventory(
        "v1.11.2",
        extensions=["i915-ucode", "amdgpu-firmware", "zfs", "realtek-firmware", "iscsi-tools"],
    )
    pins = CATALOG.releases["v1.11.2"].extensions
    assert pinned_extension_refs(inv) == [
        pins["siderolabs/amdgpu"].image_ref,
        pins["siderolabs/i915"].image_ref,
        pins["siderolabs/iscsi-tools"].image_ref,
        pins["siderolabs/realtek-firmware"].image_ref,
        pins["siderolabs/zfs"].image_ref,
    ]
    # the schematic keeps the names as given: the factory resolves the aliases itself
    assert "siderolabs/i915-ucode" in schematic_for(inv).official_extensions


def test_unknown_release_and_unpinned_extension_are_render_errors() -> None:
    with pytest.raises(RenderError, match=r"cluster\.talosVersion: Talos v1\.13\.9 has no pinned"):
        render_image(inventory("v1.13.9"))
    # realtek-firmware exists for v1.13 but cloudctl has no pin for it in v1.13.6
    with pytest.raises(RenderError, match=r"image\.extensions\[1\]: 'siderolabs/realtek-firmware'"):
        render_image(inventory("v1.13.6", extensions=["zfs", "realtek-firmware"]))


# ----------------------------------------------------------------- validate_profile


def _valid(name: str = "metal", **kw: Any) -> dict[str, Any]:
    return imager_profile(name, version=kw.pop("version", "v1.13.6"), arch="amd64", **kw)


def _broken(profile: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    p = copy.deepcopy(profile)
    keys = path.split(".")
    node = p
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value
    return p


@pytest.mark.parametrize(
    ("profile", "needle"),
    [
        (_broken(_valid("kernel"), "customization.extraKernelArgs", ["x=1"]),
         "customization.extraKernelArgs: not supported for kernel"),
        (_broken(_valid("initramfs"), "secureboot", True),
         "secureboot: not supported for initramfs"),
        (_broken(_valid("initramfs"), "customization.metaContents", [{"key": 10, "value": "x"}]),
         "metaContents: not supported for initramfs"),
        (_broken(_valid("installer"), "customization.metaContents", [{"key": 10, "value": "x"}]),
         "metaContents: not supported for installer"),
        (_broken(_valid("installer", version="1.9.0"), "customization.extraKernelArgs", ["x=1"]),
         "installer takes kernel arguments only with SecureBoot"),
        (_broken(_valid(), "output.imageOptions", None), "output.imageOptions: required"),
        (_broken(_valid(), "output.imageOptions.diskSize", 0), "diskSize: required"),
        (_broken(_valid(), "output.imageOptions.diskFormat", "vmdk"), "diskFormat: 'vmdk'"),
        (_broken(_valid(), "output.imageOptions.bootloader", "none"), "bootloader: 'none'"),
        (_broken(_valid(), "output.outFormat", ".bz2"), "outFormat: '.bz2'"),
        (_broken(_valid(), "output.kind", "disk"), "output.kind: 'disk'"),
        (_broken(_valid("iso", version="v1.11.3"), "output.isoOptions", {"bootloader": "sd-boot"}),
         "isoOptions.bootloader: needs Talos >= 1.12"),
        (_broken(_valid("iso"), "output.isoOptions.sdBootEnrollKeys", "always"),
         "sdBootEnrollKeys: 'always'"),
        (_broken(_valid("installer"), "output.imageOptions", {"diskSize": 1}),
         "imageOptions: only for kind image"),
        (_broken(_valid(), "input.systemExtensions", [{"imageRef": "ghcr.io/siderolabs/zfs:2.4"}]),
         "is not pinned"),
        (_broken(_valid(), "arch", "riscv64"), "arch: 'riscv64'"),
        (_broken(_valid(), "platform", ""), "platform: required"),
        (_broken(_valid(), "output.imageOptions.sizeInGB", 4), "imageOptions.sizeInGB: unknown"),
        (_broken(_valid(), "extensions", []), "profile.extensions: unknown field"),
        (_broken(_valid(), "version", "latest"), "version: 'latest'"),
    ],
)
def test_validate_profile_rejects(profile: dict[str, Any], needle: str) -> None:
    problems = validate_profile(profile)
    assert any(needle in p for p in problems), problems


def test_validate_profile_accepts_installer_kernel_args_from_1_10() -> None:
    p = _broken(_valid("installer"), "customization.extraKernelArgs", ["x=1"])
    assert validate_profile(p) == []
    sb = imager_profile("installer", version="1.9.0", arch="amd64", secureboot=True,
                        extra_kernel_args=["x=1"])
    assert sb["customization"] == {"extraKernelArgs": ["x=1"]}
    assert validate_profile(sb) == []
    # before 1.10 without SecureBoot the renderer drops them, as the Image Factory does
    legacy = imager_profile("installer", version="1.9.0", arch="amd64", extra_kernel_args=["x=1"])
    assert "customization" not in legacy


def test_imager_profile_refuses_impossible_requests() -> None:
    with pytest.raises(ValueError, match="SecureBoot"):
        imager_profile("kernel", version="v1.13.6", arch="amd64", secureboot=True)
    with pytest.raises(ValueError, match="unknown imager profile"):
        imager_profile("uki", version="v1.13.6", arch="amd64")


# ----------------------------------------------------------------- asset URLs


def test_asset_urls_official_factory() -> None:
    inv = inventory("v1.13.6")
    sid = schematic_for(inv).id
    urls = asset_urls(inv)
    assert isinstance(urls, AssetUrls)
    base = f"https://factory.talos.dev/image/{sid}/v1.13.6"
    assert urls.kernel == f"{base}/kernel-amd64"
    assert urls.initramfs == f"{base}/initramfs-amd64.xz"
    assert urls.cmdline == f"{base}/cmdline-metal-amd64"
    assert urls.iso == f"{base}/metal-amd64.iso"
    assert urls.metal == f"{base}/metal-amd64.raw.xz"
    assert urls.nocloud == f"{base}/nocloud-amd64.raw.xz"
    assert urls.uki is None
    assert urls.pxe_script == f"https://pxe.talos.dev/pxe/{sid}/v1.13.6/metal-amd64"
    assert urls.installer == f"factory.talos.dev/metal-installer/{sid}:v1.13.6"
    assert urls.installer_source == "factory"
    with pytest.raises(AttributeError):
        urls.kernel = "x"  # type: ignore[misc]


def test_asset_urls_secureboot_arm64() -> None:
    inv = inventory("v1.12.7", arch="arm64", secureboot=True)
    sid = schematic_for(inv).id
    urls = asset_urls(inv)
    base = f"https://factory.talos.dev/image/{sid}/v1.12.7"
    assert urls.kernel == f"{base}/kernel-arm64"
    assert urls.iso == f"{base}/metal-arm64-secureboot.iso"
    assert urls.metal == f"{base}/metal-arm64-secureboot.raw.xz"
    assert urls.uki == f"{base}/metal-arm64-secureboot-uki.efi"
    assert urls.pxe_script.endswith(f"/pxe/{sid}/v1.12.7/metal-arm64-secureboot")
    assert urls.installer == f"factory.talos.dev/metal-installer-secureboot/{sid}:v1.12.7"


def test_asset_urls_self_hosted_factory_and_registry_installer() -> None:
    inv = inventory(
        "v1.13.6",
        installer={"source": "factory", "factoryUrl": "http://10.20.0.5:8080/"},
    )
    sid = schematic_for(inv).id
    urls = asset_urls(inv)
    assert urls.kernel == f"http://10.20.0.5:8080/image/{sid}/v1.13.6/kernel-amd64"
    assert urls.pxe_script == f"http://10.20.0.5:8080/pxe/{sid}/v1.13.6/metal-amd64"
    reg = inventory(
        "v1.13.6", installer={"source": "registry", "image": "registry.example.com/talos/installer"}
    )
    files = render_image(reg)
    assets = yaml.safe_load(files[f"{IMAGE_DIR}/assets.yaml"].data)
    assert assets["installer"] == {
        "source": "registry",
        "image": "registry.example.com/talos/installer:v1.13.6",
    }
    assert assets["installer"]["image"] == installer_image(reg)
    # profiles do not depend on where the installer is published
    assert _profile_docs(files) == _profile_docs(render_image(inventory("v1.13.6")))


def test_assets_document() -> None:
    inv = inventory("v1.13.6")
    assets = yaml.safe_load(render_image(inv)[f"{IMAGE_DIR}/assets.yaml"].data)
    urls = asset_urls(inv)
    assert assets["schematic"] == urls.schematic_id
    assert assets["kernel"] == urls.kernel and assets["initramfs"] == urls.initramfs
    assert assets["pxeScript"] == urls.pxe_script
    assert assets["imagerOutputs"] == {
        "installer": "installer-amd64.tar",
        "iso": "metal-amd64.iso",
        "kernel": "kernel-amd64",
        "initramfs": "initramfs-metal-amd64.xz",
        "metal": "metal-amd64.raw.xz",
        "nocloud": "nocloud-amd64.raw.xz",
    }
