"""Talos imager profiles: build them, and check them against the imager's own rules.

An imager profile is the YAML that ``ghcr.io/siderolabs/imager:<version> -`` reads on stdin to
build one boot asset. ``imager_profile`` returns the profile as the imager would hold it after
its ``FillDefaults`` (so the file is explicit about every default), and ``validate_profile``
implements the imager's ``Validate`` rules plus the enum values of its fields.

Facts encoded here (siderolabs/talos ``pkg/imager/profile`` and ``pkg/machinery/imager/quirks``,
read at v1.13.9; see reference/talos-image-factory.md §5):

* ``version`` is used verbatim, also as the tag of the base installer image
  (``<repository>:<version>``). Upstream test fixtures use ``1.13.0``; real builds and the Image
  Factory use the release tag ``v1.13.0``, which is what cloudctl renders.
* base installer: ``ghcr.io/siderolabs/installer-base`` from Talos 1.10 on, before that
  ``ghcr.io/siderolabs/installer``.
* disk-image bootloader default: ``sd-boot`` with SecureBoot, ``sd-boot`` on arm64 from 1.10,
  ``grub`` before 1.10, else ``dual-boot``.
* default raw disk size: 1306525696 bytes, plus 1000 MiB from 1.11 on (2 GB boot partition);
  ``dual-boot`` adds the BIOS-GRUB partition (1 MiB) and a second boot partition.
* ISO options: ``sdBootEnrollKeys`` (default ``if-safe``) always from 1.12 on and with SecureBoot
  before; ``isoOptions.bootloader`` only exists from 1.12 on.
* kernel and initramfs outputs take no SecureBoot, kernel arguments or META; the installer takes
  no META, and kernel arguments only with SecureBoot or from 1.10 on (unified installer).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeGuard

from ..catalog import parse_version

PROFILE_NAMES: tuple[str, ...] = ("installer", "iso", "kernel", "initramfs", "metal", "nocloud")

OUTPUT_KINDS = frozenset({"iso", "image", "installer", "kernel", "initramfs", "uki", "cmdline"})
OUT_FORMATS = frozenset({"raw", ".tar.gz", ".xz", ".gz", ".zst"})
DISK_FORMATS = frozenset({"raw", "qcow2", "vhd", "ova"})
BOOTLOADERS = frozenset({"dual-boot", "sd-boot", "grub"})
ENROLL_KEYS = frozenset({"if-safe", "manual", "force", "off"})
ARCHES = frozenset({"amd64", "arm64"})

INSTALLER_BASE_REPOSITORY = "ghcr.io/siderolabs/installer-base"
LEGACY_INSTALLER_REPOSITORY = "ghcr.io/siderolabs/installer"
SECUREBOOT_DIR = "/secureboot"

_MIB = 1024 * 1024
_LEGACY_RAW_DISK_SIZE = 1306525696
_BIOS_GRUB_SIZE = 1 * _MIB

_KEYS_TOP = frozenset(
    {"baseProfileName", "arch", "platform", "board", "secureboot", "version", "customization",
     "input", "overlay", "output"}
)
_KEYS_CUSTOMIZATION = frozenset({"extraKernelArgs", "metaContents", "embeddedMachineConfiguration"})
_KEYS_INPUT = frozenset(
    {"kernel", "initramfs", "sdStub", "sdBoot", "dtb", "uBoot", "rpiFirmware", "baseInstaller",
     "imageCache", "overlayInstaller", "secureboot", "systemExtensions"}
)
_KEYS_OUTPUT = frozenset({"kind", "imageOptions", "isoOptions", "outFormat"})
_KEYS_IMAGE_OPTIONS = frozenset({"diskSize", "diskFormat", "diskFormatOptions", "bootloader"})
_KEYS_ISO_OPTIONS = frozenset({"sdBootEnrollKeys", "bootloader"})
_PINNED_REF = re.compile(r"^[^@\s]+:[^@:/\s]+@sha256:[0-9a-f]{64}$")

# profile name -> (platform, output kind)
_PROFILES: dict[str, tuple[str, str]] = {
    "installer": ("metal", "installer"),
    "iso": ("metal", "iso"),
    "kernel": ("metal", "kernel"),
    "initramfs": ("metal", "initramfs"),
    "metal": ("metal", "image"),
    "nocloud": ("nocloud", "image"),
}


def _v(version: str) -> tuple[int, int, int]:
    return parse_version(version)


def default_bootloader(version: str, arch: str, secureboot: bool) -> str:
    """The disk-image bootloader the imager picks when the profile names none."""
    if secureboot:
        return "sd-boot"
    if _v(version) < (1, 10, 0):
        return "grub"
    if arch == "arm64":
        return "sd-boot"
    return "dual-boot"


def default_disk_size(version: str, bootloader: str) -> int:
    """Default raw disk size in bytes for a metal/nocloud disk image."""
    boot2g = _v(version) >= (1, 11, 0)
    size = _LEGACY_RAW_DISK_SIZE + (1000 * _MIB if boot2g else 0)
    if bootloader == "dual-boot":
        size += _BIOS_GRUB_SIZE + (2000 if boot2g else 1000) * _MIB
    return size


def base_installer_ref(version: str) -> str:
    repo = INSTALLER_BASE_REPOSITORY if _v(version) >= (1, 10, 0) else LEGACY_INSTALLER_REPOSITORY
    return f"{repo}:{version}"


def _iso_options(version: str, bootloader: str, secureboot: bool) -> dict[str, Any] | None:
    if _v(version) >= (1, 12, 0):
        return {"sdBootEnrollKeys": "if-safe", "bootloader": bootloader}
    if secureboot:
        return {"sdBootEnrollKeys": "if-safe"}
    return None


def _kernel_args_allowed(kind: str, version: str, secureboot: bool) -> bool:
    if kind in ("kernel", "initramfs"):
        return False
    if kind == "installer":
        return secureboot or _v(version) >= (1, 10, 0)
    return True


def imager_profile(
    name: str,
    *,
    version: str,
    arch: str,
    secureboot: bool = False,
    extension_refs: Sequence[str] = (),
    extra_kernel_args: Sequence[str] = (),
    disk_out_format: str = ".xz",
) -> dict[str, Any]:
    """One imager profile (``name`` in PROFILE_NAMES) with the imager's defaults filled in.

    ``extension_refs`` are pinned image references (``ghcr.io/...:tag@sha256:...``), kept in the
    given order (not used by the kernel output). ``extra_kernel_args`` are dropped for outputs
    that cannot carry them (kernel, initramfs; the installer before Talos 1.10 without
    SecureBoot), as the Image Factory does.
    ``disk_out_format`` is the compression of the metal/nocloud disk images: ``.xz`` matches the
    Image Factory's ``metal-amd64.raw.xz``; the imager's own default is ``.zst``.
    """
    if name not in _PROFILES:
        raise ValueError(f"unknown imager profile {name!r} (known: {', '.join(PROFILE_NAMES)})")
    if arch not in ARCHES:
        raise ValueError(f"unknown architecture {arch!r}")
    if disk_out_format not in OUT_FORMATS:
        raise ValueError(f"unknown output format {disk_out_format!r}")
    if secureboot and name in ("kernel", "initramfs"):
        raise ValueError(f"the {name} output cannot be built with SecureBoot")
    platform, kind = _PROFILES[name]
    bootloader = default_bootloader(version, arch, secureboot)

    profile: dict[str, Any] = {
        "arch": arch,
        "platform": platform,
        "secureboot": bool(secureboot),
        "version": version,
    }
    if extra_kernel_args and _kernel_args_allowed(kind, version, secureboot):
        profile["customization"] = {"extraKernelArgs": list(extra_kernel_args)}

    install_dir = f"/usr/install/{arch}"
    inp: dict[str, Any] = {
        "kernel": {"path": f"{install_dir}/vmlinuz"},
        "initramfs": {"path": f"{install_dir}/initramfs.xz"},
        "sdStub": {"path": f"{install_dir}/systemd-stub.efi"},
        "sdBoot": {"path": f"{install_dir}/systemd-boot.efi"},
        "baseInstaller": {"imageRef": base_installer_ref(version)},
    }
    if secureboot:
        inp["secureboot"] = {
            "secureBootSigner": {
                "keyPath": f"{SECUREBOOT_DIR}/uki-signing-key.pem",
                "certPath": f"{SECUREBOOT_DIR}/uki-signing-cert.pem",
            },
            "pcrSigner": {"keyPath": f"{SECUREBOOT_DIR}/pcr-signing-key.pem"},
        }
    if extension_refs and kind != "kernel":
        # the kernel carries no extensions; the Image Factory adds none to kernel outputs either
        inp["systemExtensions"] = [{"imageRef": ref} for ref in extension_refs]
    profile["input"] = inp

    output: dict[str, Any] = {"kind": kind}
    if kind == "image":
        output["imageOptions"] = {
            "diskSize": default_disk_size(version, bootloader),
            "diskFormat": "raw",
            "bootloader": bootloader,
        }
        output["outFormat"] = disk_out_format
    else:
        if kind == "iso":
            iso = _iso_options(version, bootloader, secureboot)
            if iso is not None:
                output["isoOptions"] = iso
        output["outFormat"] = "raw"
    profile["output"] = output
    return profile


def output_name(profile: Mapping[str, Any]) -> str:
    """The file the imager writes for this profile (e.g. ``metal-amd64.raw.xz``)."""
    arch = profile["arch"]
    sb = "-secureboot" if profile.get("secureboot") else ""
    base = f"{profile['platform']}-{arch}{sb}"
    out = profile["output"]
    kind = out["kind"]
    fmt = out.get("outFormat", "raw")
    suffix = "" if fmt == "raw" else fmt
    if kind == "iso":
        return f"{base}.iso"
    if kind == "image":
        return f"{base}.{out['imageOptions']['diskFormat']}{suffix}"
    if kind == "installer":
        return f"installer-{arch}{sb}.tar"
    if kind == "kernel":
        return f"kernel-{arch}"
    if kind == "initramfs":
        return f"initramfs-{base}.xz"
    if kind == "uki":
        return f"{base}-uki.efi"
    if kind == "cmdline":
        return f"cmdline-{base}"
    raise ValueError(f"unknown output kind {kind!r}")


def _unknown(where: str, value: Mapping[str, Any], known: Iterable[str]) -> list[str]:
    return [f"{where}.{k}: unknown field" for k in sorted(set(value) - set(known))]


def _is_map(value: Any) -> TypeGuard[Mapping[str, Any]]:
    return isinstance(value, Mapping)


def validate_profile(profile: Mapping[str, Any]) -> list[str]:
    """Problems of an imager profile under the imager's rules; empty when it is valid.

    Each problem starts with the dotted path of the offending field. cloudctl additionally
    requires every system extension to be pinned by digest.
    """
    if not _is_map(profile):
        return ["(document): a profile is a mapping"]
    problems: list[str] = _unknown("profile", profile, _KEYS_TOP)

    arch = profile.get("arch")
    if arch not in ARCHES:
        problems.append(f"arch: {arch!r} is not amd64 or arm64")
    if not isinstance(profile.get("platform"), str) or not profile.get("platform"):
        problems.append("platform: required")
    if profile.get("board") and not (arch == "arm64" and profile.get("platform") == "metal"):
        problems.append("board: only supported for metal arm64")
    secureboot = profile.get("secureboot", False)
    if not isinstance(secureboot, bool):
        problems.append(f"secureboot: {secureboot!r} is not a boolean")
        secureboot = False
    version = profile.get("version")
    try:
        ver = _v(str(version)) if version else None
    except ValueError:
        ver = None
    if ver is None:
        problems.append(f"version: {version!r} is not a Talos version")
        ver = (99, 0, 0)
        version = "99.0.0"

    cust = profile.get("customization") or {}
    if not _is_map(cust):
        problems.append("customization: must be a mapping")
        cust = {}
    problems += _unknown("customization", cust, _KEYS_CUSTOMIZATION)
    kargs = cust.get("extraKernelArgs") or []
    meta = cust.get("metaContents") or []
    if not isinstance(kargs, list) or not all(isinstance(a, str) and a for a in kargs):
        problems.append("customization.extraKernelArgs: must be a list of non-empty strings")

    inp = profile.get("input") or {}
    if not _is_map(inp):
        problems.append("input: must be a mapping")
        inp = {}
    problems += _unknown("input", inp, _KEYS_INPUT)
    for key in ("kernel", "initramfs", "sdStub", "sdBoot"):
        asset = inp.get(key)
        if asset is not None and not (_is_map(asset) and isinstance(asset.get("path"), str)):
            problems.append(f"input.{key}: must be {{path: <file>}}")
    base = inp.get("baseInstaller")
    if base is not None and not (_is_map(base) and (base.get("imageRef") or base.get("ociPath"))):
        problems.append("input.baseInstaller: needs imageRef")
    exts = inp.get("systemExtensions") or []
    if not isinstance(exts, list):
        problems.append("input.systemExtensions: must be a list")
        exts = []
    for i, ext in enumerate(exts):
        ref = ext.get("imageRef") if _is_map(ext) else None
        if not isinstance(ref, str) or not ref:
            problems.append(f"input.systemExtensions[{i}]: needs imageRef")
        elif not _PINNED_REF.match(ref):
            problems.append(
                f"input.systemExtensions[{i}].imageRef: {ref!r} is not pinned as "
                "<image>:<tag>@sha256:<digest>"
            )

    out = profile.get("output")
    if not _is_map(out):
        return [*problems, "output: required"]
    problems += _unknown("output", out, _KEYS_OUTPUT)
    kind = out.get("kind")
    if kind not in OUTPUT_KINDS:
        problems.append(f"output.kind: {kind!r} is not one of {', '.join(sorted(OUTPUT_KINDS))}")
    fmt = out.get("outFormat", "raw")
    if fmt not in OUT_FORMATS:
        problems.append(f"output.outFormat: {fmt!r} is not one of {', '.join(sorted(OUT_FORMATS))}")

    img = out.get("imageOptions")
    if kind == "image":
        if not _is_map(img):
            problems.append("output.imageOptions: required for kind image")
        else:
            problems += _unknown("output.imageOptions", img, _KEYS_IMAGE_OPTIONS)
            size = img.get("diskSize")
            if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
                problems.append("output.imageOptions.diskSize: required, bytes > 0")
            if img.get("diskFormat", "raw") not in DISK_FORMATS:
                problems.append(
                    f"output.imageOptions.diskFormat: {img.get('diskFormat')!r} is not one of "
                    + ", ".join(sorted(DISK_FORMATS))
                )
            if "bootloader" in img and img["bootloader"] not in BOOTLOADERS:
                problems.append(
                    f"output.imageOptions.bootloader: {img['bootloader']!r} is not one of "
                    + ", ".join(sorted(BOOTLOADERS))
                )
    elif img:
        problems.append(f"output.imageOptions: only for kind image, not {kind}")

    iso = out.get("isoOptions")
    if iso is not None:
        if kind != "iso":
            problems.append(f"output.isoOptions: only for kind iso, not {kind}")
        elif not _is_map(iso):
            problems.append("output.isoOptions: must be a mapping")
        else:
            problems += _unknown("output.isoOptions", iso, _KEYS_ISO_OPTIONS)
            if iso.get("sdBootEnrollKeys", "if-safe") not in ENROLL_KEYS:
                problems.append(
                    f"output.isoOptions.sdBootEnrollKeys: {iso.get('sdBootEnrollKeys')!r} is not "
                    "one of " + ", ".join(sorted(ENROLL_KEYS))
                )
            if "bootloader" in iso:
                if ver < (1, 12, 0):
                    problems.append("output.isoOptions.bootloader: needs Talos >= 1.12")
                elif iso["bootloader"] not in BOOTLOADERS:
                    problems.append(
                        f"output.isoOptions.bootloader: {iso['bootloader']!r} is not one of "
                        + ", ".join(sorted(BOOTLOADERS))
                    )

    if kind in ("kernel", "initramfs"):
        if secureboot:
            problems.append(f"secureboot: not supported for {kind} output")
        if kargs:
            problems.append(f"customization.extraKernelArgs: not supported for {kind} output")
        if meta:
            problems.append(f"customization.metaContents: not supported for {kind} output")
    if kind == "installer":
        if meta:
            problems.append("customization.metaContents: not supported for installer output")
        if kargs and not _kernel_args_allowed("installer", str(version), secureboot):
            problems.append(
                "customization.extraKernelArgs: the installer takes kernel arguments only with "
                "SecureBoot or from Talos 1.10 on"
            )
    if secureboot and ver < (1, 5, 0):
        problems.append("secureboot: needs Talos >= 1.5")
    if arch == "arm64" and secureboot and ver < (1, 10, 0):
        problems.append("secureboot: arm64 SecureBoot needs Talos >= 1.10")
    return problems
