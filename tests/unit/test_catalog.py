"""Sanity of talos/catalog.yaml: every release fully pinned, well-formed, consistent."""

from __future__ import annotations

import re

import pytest
import yaml

from cloudctl.catalog import minor_of, parse_version, talos_catalog
from cloudctl.inventory.models import DEFAULT_EXTENSIONS
from cloudctl.resources import read_text

CATALOG = talos_catalog()
RELEASES = sorted(CATALOG.releases, key=parse_version)
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # OCI tag grammar
SOURCE = re.compile(r"^[\w.-]+/[\w.-]+@[0-9a-f]{40}:\S+$")

# Extensions built against one Talos release (kernel modules): their tag carries "-<version>".
MODULE_EXTENSIONS = frozenset(
    f"siderolabs/{n}"
    for n in (
        "zfs", "drbd", "i915", "amdgpu", "xe", "amazon-ena", "gasket-driver", "panfrost",
        "xdma-driver", "nonfree-kmod-nvidia-lts", "nonfree-kmod-nvidia-production",
        "nvidia-open-gpu-kernel-modules-lts", "nvidia-open-gpu-kernel-modules-production",
    )
)
# Pure firmware: the tag is a linux-firmware date, never a Talos version.
FIRMWARE_EXTENSIONS = frozenset(
    f"siderolabs/{n}"
    for n in (
        "amd-ucode", "intel-ucode", "bnx2-bnx2x", "intel-ice-firmware", "qlogic-firmware",
        "realtek-firmware", "chelsio-firmware",
    )
)


def test_supported_minors_and_newest_releases() -> None:
    assert set(CATALOG.minors) == {"v1.11", "v1.12", "v1.13"}
    for minor in CATALOG.minors:
        assert CATALOG.releases_of(minor), f"{minor} has no pinned release"
    assert CATALOG.releases_of("v1.13")[-1] == "v1.13.6"
    assert CATALOG.releases_of("v1.12")[-1] == "v1.12.7"
    assert CATALOG.releases_of("v1.11")[-1] == "v1.11.3"


@pytest.mark.parametrize("version", RELEASES)
def test_release_pins_every_default_extension(version: str) -> None:
    release = CATALOG.releases[version]
    missing = [n for n in DEFAULT_EXTENSIONS if n not in release.extensions]
    assert not missing, f"{version} lacks {missing}"
    assert SOURCE.match(release.source), f"{version}: source {release.source!r}"


@pytest.mark.parametrize("version", RELEASES)
def test_pins_are_well_formed(version: str) -> None:
    release = CATALOG.releases[version]
    minor = CATALOG.minor(version)
    assert minor is not None and minor.minor == minor_of(version)
    for name, pin in release.extensions.items():
        assert pin.name == name
        assert name.startswith("siderolabs/") and name in minor.extensions, name
        assert DIGEST.match(pin.digest), f"{version} {name}: digest {pin.digest!r}"
        assert TAG.match(pin.tag), f"{version} {name}: tag {pin.tag!r}"
        assert pin.image_ref == f"ghcr.io/{name}:{pin.tag}@{pin.digest}"
        if name in MODULE_EXTENSIONS:
            assert pin.tag.endswith(f"-{version}"), f"{version} {name}: tag {pin.tag!r}"
        if name in FIRMWARE_EXTENSIONS:
            assert re.fullmatch(r"\d{8}", pin.tag), f"{version} {name}: tag {pin.tag!r}"
        # an extension tagged with a Talos version must carry this release's version
        for other in re.findall(r"v1\.1\d\.\d+", pin.tag):
            if name.startswith("siderolabs/nvidia-container-toolkit"):
                continue  # "<driver>-v<toolkit version>", not a Talos version
            assert other == version, f"{version} {name}: tag {pin.tag!r} names {other}"


def test_digests_differ_between_releases_of_module_extensions() -> None:
    seen: dict[str, str] = {}
    for version in RELEASES:
        for name, pin in CATALOG.releases[version].extensions.items():
            if name in MODULE_EXTENSIONS:
                assert pin.digest not in seen, f"{version} {name} reuses {seen.get(pin.digest)}"
                seen[pin.digest] = f"{version} {name}"


def test_extension_names_and_aliases() -> None:
    common = {
        "siderolabs/realtek-firmware", "siderolabs/chelsio-firmware", "siderolabs/iscsi-tools",
        "siderolabs/util-linux-tools", "siderolabs/qemu-guest-agent", "siderolabs/gvisor",
        "siderolabs/nvidia-open-gpu-kernel-modules-lts", "siderolabs/nvidia-container-toolkit-lts",
        *DEFAULT_EXTENSIONS,
    }
    for name, minor in CATALOG.minors.items():
        assert common <= minor.extensions, f"{name}: {sorted(common - minor.extensions)}"
        assert all(n.startswith("siderolabs/") for n in minor.extensions)
        assert minor.canonical_extension("siderolabs/i915-ucode") == "siderolabs/i915"
        assert minor.canonical_extension("siderolabs/amdgpu-firmware") == "siderolabs/amdgpu"
        assert minor.canonical_extension("siderolabs/zfs") == "siderolabs/zfs"
        assert set(minor.aliases.values()) <= minor.extensions, name
        assert not set(minor.aliases) & minor.extensions, name
    assert "siderolabs/xe" not in CATALOG.minors["v1.11"].extensions
    assert "siderolabs/xe" in CATALOG.minors["v1.12"].extensions
    assert "siderolabs/xe" in CATALOG.minors["v1.13"].extensions


def test_catalog_file_is_plain_data() -> None:
    raw = yaml.safe_load(read_text("talos", "catalog.yaml"))
    assert set(raw) == {"minors", "releases"}
    for version, release in raw["releases"].items():
        assert set(release) == {"source", "extensions"}, version
        for name, pin in release["extensions"].items():
            assert set(pin) == {"tag", "digest"}, (version, name)
            assert isinstance(pin["tag"], str), (version, name)  # quoted: "20260622" stays a str
