"""Image Factory schematic: the canonical YAML and its ID, computed offline as the factory does.

The factory's schematic ID is the hex SHA-256 of the schematic serialised by go-yaml with the
struct's key order (owner, overlay, customization; inside customization:
embeddedMachineConfiguration, extraKernelArgs, meta, systemExtensions, bootloader, secureboot,
diskImage), 4-space indentation, sequences indented under their key, empty fields omitted and an
empty customization written as ``customization: {}``. Lists keep their order; we sort extensions
alphabetically as the factory web UI does, so our IDs match the UI's.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field

from ..inventory.models import Inventory

DEFAULT_SCHEMATIC_ID = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba"


@dataclass(frozen=True)
class Schematic:
    extra_kernel_args: tuple[str, ...] = ()
    meta: tuple[tuple[int, str], ...] = ()
    official_extensions: tuple[str, ...] = ()
    overlay_image: str | None = None
    overlay_name: str | None = None
    secureboot_include_well_known: bool = False
    disk_sector_size: int | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def canonical_yaml(self) -> str:
        return canonical_yaml(self)

    @property
    def id(self) -> str:
        return schematic_id(self)


# go-yaml quotes a plain string when it would read back as another type or is not plain-safe.
_NEEDS_QUOTES = re.compile(
    r"""^(
        |~|null|Null|NULL|true|True|TRUE|false|False|FALSE|yes|Yes|YES|no|No|NO|on|On|ON|off|Off|OFF
        |[-+]?(\d[\d_]*)(\.\d*)?([eE][-+]?\d+)?
        |[-+]?\.\d+([eE][-+]?\d+)?
        |0x[0-9a-fA-F_]+|0o[0-7_]+|0b[01_]+
        |[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)
    )$""",
    re.VERBOSE,
)
_UNSAFE_START = set("-?:,[]{}#&*!|>'\"%@`")


@functools.lru_cache(maxsize=4096)
def _scalar(value: str) -> str:
    """Render a string scalar the way go-yaml would (double-quoted when not plain-safe).

    Verified for the common forms (kernel args, extension names). For values that look like
    other YAML types go-yaml double-quotes them; exotic strings (leading/trailing spaces,
    control characters) are escaped as JSON-compatible double-quoted scalars.
    """
    if (
        _NEEDS_QUOTES.match(value)
        or value[:1] in _UNSAFE_START
        or value != value.strip()
        or ": " in value
        or " #" in value
        or value.endswith(":")
        or any(ord(c) < 0x20 or c == "\x7f" for c in value)
    ):
        escaped = (
            value.replace("\\", "\\\\")
            .replace('"', '\\"')
            .replace("\n", "\\n")
            .replace("\t", "\\t")
        )
        return f'"{escaped}"'
    return value


def canonical_yaml(s: Schematic) -> str:
    ind = "    "
    out: list[str] = []
    if s.overlay_image or s.overlay_name:
        out.append("overlay:")
        if s.overlay_image:
            out.append(f"{ind}image: {_scalar(s.overlay_image)}")
        if s.overlay_name:
            out.append(f"{ind}name: {_scalar(s.overlay_name)}")
    cust: list[str] = []
    if s.extra_kernel_args:
        cust.append(f"{ind}extraKernelArgs:")
        cust.extend(f"{ind * 2}- {_scalar(a)}" for a in s.extra_kernel_args)
    if s.meta:
        cust.append(f"{ind}meta:")
        for key, value in s.meta:
            cust.append(f"{ind * 2}- key: {int(key)}")
            cust.append(f"{ind * 2}  value: {_scalar(value)}")
    if s.official_extensions:
        cust.append(f"{ind}systemExtensions:")
        cust.append(f"{ind * 2}officialExtensions:")
        cust.extend(f"{ind * 3}- {_scalar(e)}" for e in s.official_extensions)
    if s.secureboot_include_well_known:
        cust.append(f"{ind}secureboot:")
        cust.append(f"{ind * 2}includeWellKnownCertificates: true")
    if s.disk_sector_size:
        cust.append(f"{ind}diskImage:")
        cust.append(f"{ind * 2}sectorSize: {int(s.disk_sector_size)}")
    if cust:
        out.append("customization:")
        out.extend(cust)
    else:
        out.append("customization: {}")
    return "\n".join(out) + "\n"


def schematic_id(s: Schematic) -> str:
    return hashlib.sha256(canonical_yaml(s).encode("utf-8")).hexdigest()


def schematic_for(inv: Inventory) -> Schematic:
    """The inventory's schematic: extensions (sorted, as the factory UI does), kernel args."""
    return Schematic(
        extra_kernel_args=tuple(inv.image.extra_kernel_args),
        official_extensions=tuple(sorted(set(inv.image.extensions))),
        secureboot_include_well_known=False,
    )


def _factory_host(url: str) -> str:
    return re.sub(r"^[a-z]+://", "", url).rstrip("/")


def installer_image(inv: Inventory) -> str:
    """The installer image reference for ``machine.install.image`` and upgrades."""
    version = inv.cluster.talos_version
    inst = inv.image.installer
    if inst.source == "registry":
        assert inst.image is not None
        return f"{inst.image}:{version}"
    suffix = "-secureboot" if inv.image.secureboot else ""
    host = _factory_host(inst.factory_url)
    return f"{host}/metal-installer{suffix}/{schematic_for(inv).id}:{version}"
