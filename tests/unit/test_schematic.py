"""Image Factory schematic IDs computed offline (cloudctl.render.schematic).

The vectors are from reference/talos-image-factory.md section 2 (upstream image-factory test
vectors and Talos docs examples, each recomputed there), plus IDs that the public factory returned
for real extension sets and that were published in public repositories.
"""

from __future__ import annotations

import hashlib

import pytest

from cloudctl.inventory.models import DEFAULT_EXTENSIONS, Inventory
from cloudctl.inventory.synthetic import synthetic_inventory
from cloudctl.render.schematic import (
    DEFAULT_SCHEMATIC_ID,
    Schematic,
    installer_image,
    schematic_for,
)

VECTORS: list[tuple[str, Schematic, str, str]] = [
    (
        "default",
        Schematic(),
        "customization: {}\n",
        "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba",
    ),
    (
        "kernel-args",
        Schematic(extra_kernel_args=("noapic", "nolapic")),
        "customization:\n    extraKernelArgs:\n        - noapic\n        - nolapic\n",
        "9cba8e32753f91a16c1837ab8abf356af021706ef284aef07380780177d9a06c",
    ),
    (
        "meta",
        Schematic(meta=((0xA, "foo"),)),
        "customization:\n    meta:\n        - key: 10\n          value: foo\n",
        "d308a2a5ee2277bed5fbaa104fcbc8d59122abfa737df987a95b4ca763459a7f",
    ),
    (
        "secureboot-well-known",
        Schematic(secureboot_include_well_known=True),
        "customization:\n    secureboot:\n        includeWellKnownCertificates: true\n",
        "fa8e05f142a851d3ee568eb0a8e5841eaf6b0ebc8df9a63df16ac5ed2c04f3e6",
    ),
    (
        "sector-size",
        Schematic(disk_sector_size=4096),
        "customization:\n    diskImage:\n        sectorSize: 4096\n",
        "92833e9ddd9bb9e11b2464fa5525429f01866306d52ebd882ee08d7918f6d1ea",
    ),
    (
        "overlay",
        Schematic(overlay_image="siderolabs/sbc-raspberrypi", overlay_name="rpi_generic"),
        "overlay:\n    image: siderolabs/sbc-raspberrypi\n    name: rpi_generic\n"
        "customization: {}\n",
        "ee21ef4a5ef808a9b7484cc0dda0f25075021691c8c09a276591eedb638ea1f9",
    ),
    (
        "docs-gvisor-ucode-ifnames",
        Schematic(
            extra_kernel_args=("net.ifnames=0",),
            official_extensions=("siderolabs/gvisor", "siderolabs/intel-ucode"),
        ),
        "customization:\n    extraKernelArgs:\n        - net.ifnames=0\n    systemExtensions:\n"
        "        officialExtensions:\n            - siderolabs/gvisor\n"
        "            - siderolabs/intel-ucode\n",
        "b8e8fbbe1b520989e6c52c8dc8303070cb42095997e76e812fa8892393e1d176",
    ),
    (
        "docs-gvisor",
        Schematic(official_extensions=("siderolabs/gvisor",)),
        "customization:\n    systemExtensions:\n        officialExtensions:\n"
        "            - siderolabs/gvisor\n",
        "d9ff89777e246792e7642abd3220a616afb4e49822382e4213a2e528ab826fe5",
    ),
]


@pytest.mark.parametrize(("name", "schematic", "text", "sid"), VECTORS, ids=[v[0] for v in VECTORS])
def test_reference_vectors(name: str, schematic: Schematic, text: str, sid: str) -> None:
    assert schematic.canonical_yaml() == text
    assert schematic.id == sid
    assert hashlib.sha256(text.encode()).hexdigest() == sid


def test_default_id_constant() -> None:
    assert Schematic().id == DEFAULT_SCHEMATIC_ID


def test_extension_order_is_kept() -> None:
    # factory-returned ID for [amdgpu, amd-ucode] in this order, published with a Terraform config
    # ("factory.talos.dev/installer/b6ab12ed...", AMD GPU extensions); the sorted order differs.
    unsorted = Schematic(official_extensions=("siderolabs/amdgpu", "siderolabs/amd-ucode"))
    assert unsorted.id == "b6ab12edc37d4a92a0705f4f2f12952d5a1a3f38b51783422b56810b60e230fd"
    resorted = Schematic(official_extensions=("siderolabs/amd-ucode", "siderolabs/amdgpu"))
    assert resorted.id != unsorted.id


def test_published_factory_ids_for_larger_sets() -> None:
    # A public runbook lists the factory IDs (prefixes) of these two sorted v1.13.4 sets.
    cp = [
        "amazon-ena", "amd-ucode", "amdgpu", "binfmt-misc", "bird2", "bnx2-bnx2x", "btrfs",
        "drbd", "intel-ice-firmware", "intel-ucode", "nfs-utils", "nfsd", "nfsrahead",
        "qlogic-firmware", "zfs",
    ]
    control = Schematic(official_extensions=tuple(f"siderolabs/{n}" for n in cp))
    worker = Schematic(official_extensions=tuple(sorted(f"siderolabs/{n}" for n in [*cp, "i915"])))
    assert control.id.startswith("d0d6faa0")
    assert worker.id.startswith("20811fa4")


def test_cozystack_default_extension_set() -> None:
    inv = Inventory.model_validate(synthetic_inventory(3, talos_version="v1.13.6"))
    assert tuple(inv.image.extensions) == DEFAULT_EXTENSIONS
    s = schematic_for(inv)
    expected = (
        "customization:\n    systemExtensions:\n        officialExtensions:\n"
        + "".join(f"            - {n}\n" for n in sorted(DEFAULT_EXTENSIONS))
    )
    assert s.canonical_yaml() == expected
    assert s.id == hashlib.sha256(expected.encode()).hexdigest()
    assert s.id == "028f93ab420473758bc26e49205c3c99be5f1bcca0902503b822e13ed56ce310"
    # the inventory's order does not matter: the UI (and cloudctl) sort before submitting
    doc = synthetic_inventory(3, talos_version="v1.13.6")
    doc["image"] = {"extensions": list(reversed(DEFAULT_EXTENSIONS))}
    assert schematic_for(Inventory.model_validate(doc)).id == s.id


def test_installer_image_factory_and_registry() -> None:
    doc = synthetic_inventory(3, talos_version="v1.13.6")
    inv = Inventory.model_validate(doc)
    sid = schematic_for(inv).id
    assert installer_image(inv) == f"factory.talos.dev/metal-installer/{sid}:v1.13.6"
    doc["image"] = {"secureboot": True}
    assert installer_image(Inventory.model_validate(doc)) == (
        f"factory.talos.dev/metal-installer-secureboot/{sid}:v1.13.6"
    )
    doc["image"] = {"installer": {"source": "registry", "image": "registry.example.com/talos/inst"}}
    assert installer_image(Inventory.model_validate(doc)) == (
        "registry.example.com/talos/inst:v1.13.6"
    )
