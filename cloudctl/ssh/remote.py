"""Shell commands ``install-ssh`` runs on the host, and how their answers are read. Pure.

Only POSIX sh, util-linux (lsblk, findmnt) and coreutils or busybox (dd, head, sha256sum,
sync) are assumed, as in any rescue system; ``kexec`` (kexec-tools) only for ``--kexec``.
Every path is quoted with ``shlex.quote``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from shlex import quote

from .disk import LSBLK_COLUMNS

BLOCK = 4 << 20
"""dd block size; a resumed write starts at a multiple of it."""
TOOLS = ("lsblk", "findmnt", "dd", "head", "sha256sum", "sync")
KEXEC_TOOLS = ("kexec", "ip", "sha256sum")
STAGING = "/tmp/cloudctl-kexec"


def missing_tools_cmd(tools: tuple[str, ...]) -> str:
    """Prints the name of every tool the host lacks, one per line."""
    names = " ".join(quote(t) for t in tools)
    return f"for t in {names}; do command -v \"$t\" >/dev/null 2>&1 || echo \"$t\"; done"


def lsblk_cmd(disk: str) -> str:
    return f"lsblk -J -b -o {LSBLK_COLUMNS} {quote(disk)}"


ROOT_CMD = "findmnt -n -o SOURCE /"


def write_cmd(disk: str, offset: int) -> str:
    """dd the raw image arriving on stdin onto ``disk``, from byte ``offset`` (a multiple of
    ``BLOCK``), flushing the disk before exiting."""
    if offset % BLOCK:
        raise ValueError(f"offset {offset} is not a multiple of {BLOCK}")
    return f"dd of={quote(disk)} bs={BLOCK} seek={offset // BLOCK} conv=notrunc,fsync"


def sha256_cmd(path: str, length: int | None = None) -> str:
    """SHA-256 of a file, or of its first ``length`` bytes."""
    if length is None:
        return f"sha256sum {quote(path)}"
    return f"head -c {int(length)} {quote(path)} | sha256sum"


def parse_sha256(out: str) -> str | None:
    m = re.match(r"^\s*([0-9a-f]{64})\b", out)
    return m.group(1) if m else None


def upload_cmd(path: str) -> str:
    """Write stdin to ``path`` (0600, its directory 0700)."""
    parent = path.rsplit("/", 1)[0] or "/"
    return (f"umask 077 && mkdir -p {quote(parent)} && cat > {quote(path)}.part && "
            f"mv {quote(path)}.part {quote(path)}")


REBOOT_CMD = ("sync && nohup sh -c 'sleep 2; reboot || reboot -f' >/dev/null 2>&1 </dev/null &")
"""Reboot once the SSH session has returned (the reboot must not cut the answer off)."""


def kexec_cmd(kernel: str, initramfs: str, cmdline: str) -> str:
    """Load the Talos kernel and initramfs, then execute it after the session returns."""
    return (f"kexec -l {quote(kernel)} --initrd={quote(initramfs)} "
            f"--command-line={quote(cmdline)} && sync && "
            "nohup sh -c 'sleep 2; kexec -e' >/dev/null 2>&1 </dev/null &")


NETWORK_CMD = "ip -4 -o addr show scope global; echo --; ip -4 route show default; echo --; " \
              "hostname"


@dataclass(frozen=True)
class HostNetwork:
    interface: str
    address: str
    prefix: int
    gateway: str | None
    hostname: str

    def ip_arg(self) -> str:
        """The kernel ``ip=`` argument that keeps this address in Talos maintenance mode
        (``ip=<client>::<gw>:<netmask>:<hostname>:<device>:off``)."""
        mask = ipaddress.IPv4Network(f"0.0.0.0/{self.prefix}").netmask
        return (f"ip={self.address}::{self.gateway or ''}:{mask}:{self.hostname}:"
                f"{self.interface}:off")


def parse_network(out: str, ssh_address: str) -> HostNetwork | None:
    """The interface carrying the default route (else the SSH address), from NETWORK_CMD."""
    parts = out.split("--\n")
    if len(parts) < 3:
        return None
    addrs: list[tuple[str, str, int]] = []
    for line in parts[0].splitlines():
        m = re.match(r"^\d+:\s+(\S+)\s+inet\s+([\d.]+)/(\d+)", line)
        if m:
            addrs.append((m.group(1), m.group(2), int(m.group(3))))
    gw = dev = None
    for line in parts[1].splitlines():
        m = re.match(r"^default via ([\d.]+) dev (\S+)", line)
        if m:
            gw, dev = m.group(1), m.group(2)
            break
    hostname = re.sub(r"[^A-Za-z0-9.-]", "", parts[2].strip())[:63]
    pick = next((a for a in addrs if a[0] == dev), None) or \
        next((a for a in addrs if a[1] == ssh_address), None)
    if pick is None:
        return None
    iface, address, prefix = pick
    return HostNetwork(iface, address, prefix, gw if dev == iface else None, hostname)
