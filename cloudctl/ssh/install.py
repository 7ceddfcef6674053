"""Install Talos on one node over SSH: check the disk, stream the image, verify, reboot; or
kexec into the Talos kernel and initramfs (maintenance mode, no disk touched).

Every refusal (unknown or changed host key, a disk that is missing, too small, mounted, in
use as swap, read-only or holding the running root) happens before the first byte is
written. The write is resumable: ``<state dir>/<node>.json`` records how far the stream got;
the next run checks that the host's disk really holds that prefix (SHA-256 on both sides)
and continues from there, else starts over.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..atomic import write_atomic
from ..boot.assets import sha256_file
from ..errors import EnvironmentNotReady, GateRefused, RemoteError
from ..inventory.models import Node
from . import remote
from .disk import LsblkParseError, human_size, parse_lsblk, refusals
from .image import RawImage, prefix_sha256, raw_chunks
from .session import Session

Say = Callable[[str, str], None]
"""say(kind, message): kinds are info, progress, warn, done."""
RECORD_EVERY = 64 << 20
PROGRESS_EVERY = 1.0


@dataclass(frozen=True)
class Installed:
    node: str
    disk: str
    size: int
    sha256: str
    resumed_from: int
    seconds: float
    rebooted: bool

    def summary(self) -> str:
        then = "rebooting into Talos" if self.rebooted else "not rebooted (--no-reboot)"
        if self.resumed_from == self.size:
            return f"{self.disk} already held the image (SHA-256 verified); {then}"
        rate = self.size - self.resumed_from
        speed = rate / self.seconds / (1 << 20) if self.seconds > 0 else 0.0
        resumed = f", resumed at {human_size(self.resumed_from)}" if self.resumed_from else ""
        return (f"{human_size(self.size)} written to {self.disk} and verified (SHA-256 "
                f"{self.sha256[:16]}…){resumed}, {speed:.0f} MiB/s; {then}")


def _need_tools(session: Session, tools: tuple[str, ...]) -> None:
    res = session.run(remote.missing_tools_cmd(tools))
    missing = res.out.split()
    if res.code != 0 or missing:
        raise RemoteError(f"node {session.node.name}: {session.where} lacks "
                          f"{', '.join(missing) or 'a POSIX shell'}; a rescue system with "
                          f"{', '.join(tools)} is needed")


def check_disk(session: Session, disk: str, need: int) -> None:
    """Refuse (GateRefused, nothing written) unless ``disk`` may take ``need`` bytes."""
    name = session.node.name
    res = session.run(remote.lsblk_cmd(disk))
    if res.code != 0:
        reasons = [f"{disk} is not a block device on the host "
                   f"({res.err.strip() or 'lsblk failed'})"]
    else:
        root = session.run(remote.ROOT_CMD).out.strip()
        try:
            reasons = refusals(parse_lsblk(res.out), disk, need, root)
        except LsblkParseError as exc:
            raise RemoteError(f"node {name}: cannot read lsblk's answer: {exc}") from None
    if reasons:
        raise GateRefused(f"node {name}: refusing to write the Talos image to {disk} on "
                          f"{session.where}; nothing was written:\n  - "
                          + "\n  - ".join(reasons))


class _Record:
    """How far the stream to a node's disk got (``<state dir>/<node>.json``)."""

    def __init__(self, path: Path, disk: str, image: RawImage) -> None:
        self.path, self.disk, self.image = path, disk, image

    def offset(self) -> int:
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return 0
        if not isinstance(doc, dict) or doc.get("disk") != self.disk or \
                doc.get("sha256") != self.image.sha256:
            return 0
        if doc.get("done"):
            return self.image.size
        sent = doc.get("sent")
        return (sent // remote.BLOCK) * remote.BLOCK if isinstance(sent, int) else 0

    def save(self, sent: int, *, done: bool = False) -> None:
        write_atomic(self.path, json.dumps({"disk": self.disk, "sha256": self.image.sha256,
                                            "size": self.image.size, "sent": sent,
                                            "done": done}) + "\n")


def _resume_offset(session: Session, record: _Record, say: Say) -> int:
    offset = record.offset()
    if not offset:
        return 0
    done = offset == record.image.size
    earlier = "wrote the whole image" if done else f"sent {human_size(offset)}"
    say("info", f"an earlier run {earlier}; checking the disk holds it")
    res = session.run(remote.sha256_cmd(record.disk, offset), timeout=900)
    want = record.image.sha256 if done else prefix_sha256(record.image, offset)
    if res.code == 0 and remote.parse_sha256(res.out) == want:
        if done:
            say("info", f"{record.disk} already holds this image (SHA-256 verified); not "
                        "written again")
        else:
            say("info", f"resuming at {human_size(offset)} (the first {offset} bytes on "
                        f"{record.disk} match the image)")
        return offset
    say("warn", "the disk does not hold what the earlier run sent; starting over")
    return 0


def _skip(chunks: Iterator[bytes], offset: int) -> Iterator[bytes]:
    left = offset
    for block in chunks:
        if left >= len(block):
            left -= len(block)
            continue
        yield block[left:] if left else block
        left = 0


@contextlib.contextmanager
def _exclusive(state_dir: Path, node: str) -> Iterator[None]:
    """One writer per node: a second install-ssh of the same node waits for nobody, it
    refuses (exit 5) while the first one runs."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / f"{node}.lock").open("a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EnvironmentNotReady(f"node {node}: another install-ssh is writing its disk "
                                      "right now; wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def write_image(session: Session, image: RawImage, disk: str, state_dir: Path, say: Say, *,
                reboot: bool = True) -> Installed:
    """Check, stream, verify and (unless ``reboot`` is False) reboot. See the module doc."""
    with _exclusive(state_dir, session.node.name):
        return _write_image(session, image, disk, state_dir, say, reboot=reboot)


def _write_image(session: Session, image: RawImage, disk: str, state_dir: Path, say: Say, *,
                 reboot: bool) -> Installed:
    _need_tools(session, remote.TOOLS)
    check_disk(session, disk, image.size)
    record = _Record(state_dir / f"{session.node.name}.json", disk, image)
    offset = _resume_offset(session, record, say)
    how = ", xz-decompressed while streaming" if image.compressed else ""
    started = time.monotonic()
    if offset == image.size:
        return _finish(session, image, disk, offset, started, reboot)
    say("info", f"writing {human_size(image.size)} of raw Talos image to {disk} "
                f"({image.path.name}{how})")
    sent = offset
    marks = {"shown": 0.0, "saved": offset}

    def on_sent(n: int) -> None:
        nonlocal sent
        sent += n
        now = time.monotonic()
        if now - marks["shown"] >= PROGRESS_EVERY or sent == image.size:
            marks["shown"] = now
            rate = (sent - offset) / max(now - started, 1e-6) / (1 << 20)
            say("progress", f"{100 * sent // image.size:3d}% {human_size(sent)} of "
                            f"{human_size(image.size)}, {rate:.0f} MiB/s")
        if sent - marks["saved"] >= RECORD_EVERY:
            marks["saved"] = sent
            record.save(sent)

    try:
        res = session.stream(remote.write_cmd(disk, offset),
                             _skip(raw_chunks(image), offset), on_sent)
    finally:
        record.save(sent)  # also when interrupted: the next run checks and resumes
    if res.code != 0 or sent != image.size:
        last = (res.err.strip().splitlines() or ["no message"])[-1]
        raise RemoteError(f"node {session.node.name}: writing {disk} stopped at "
                          f"{human_size(sent)} of {human_size(image.size)} (dd exit {res.code}: "
                          f"{last}); run "
                          "install-ssh again to resume")
    say("info", f"verifying: SHA-256 of the first {image.size} bytes of {disk} on the host")
    check = session.run(remote.sha256_cmd(disk, image.size), timeout=900)
    got = remote.parse_sha256(check.out)
    if got != image.sha256:
        record.save(0)
        raise RemoteError(f"node {session.node.name}: {disk} does not hold the image after "
                          f"writing: SHA-256 on the host {got or check.err.strip()!r}, "
                          f"image {image.sha256}; run install-ssh again")
    record.save(image.size, done=True)
    return _finish(session, image, disk, offset, started, reboot)


def _finish(session: Session, image: RawImage, disk: str, offset: int, started: float,
            reboot: bool) -> Installed:
    seconds = time.monotonic() - started
    if reboot:
        res = session.run(remote.REBOOT_CMD)
        if res.code != 0:
            raise RemoteError(f"node {session.node.name}: reboot on {session.where} failed: "
                              f"{res.err.strip()}")
    return Installed(session.node.name, disk, image.size, image.sha256, offset, seconds, reboot)


def kexec_talos(session: Session, kernel: Path, initramfs: Path, args: list[str],
                say: Say, *, execute: bool = True) -> str:
    """Upload the kernel and initramfs (checked by SHA-256 on the host) and kexec into them
    with ``args`` plus an ``ip=`` argument keeping the host's current address."""
    _need_tools(session, remote.KEXEC_TOOLS)
    net = remote.parse_network(session.run(remote.NETWORK_CMD).out, session.node.ssh_address)
    if net is None:
        raise RemoteError(f"node {session.node.name}: cannot tell which interface of "
                          f"{session.where} carries {session.node.ssh_address} (ip -4 addr)")
    staged: dict[str, str] = {}
    for local, name in ((kernel, "vmlinuz"), (initramfs, "initramfs.xz")):
        path = f"{remote.STAGING}/{name}"
        say("info", f"uploading {local.name} ({human_size(local.stat().st_size)}) to {path}")
        res = session.stream(remote.upload_cmd(path), _file_chunks(local), lambda n: None)
        want = sha256_file(local)
        got = remote.parse_sha256(session.run(remote.sha256_cmd(path)).out)
        if res.code != 0 or got != want:
            raise RemoteError(f"node {session.node.name}: upload of {local.name} to {path} "
                              f"failed ({res.err.strip() or f'SHA-256 {got} != {want}'})")
        staged[name] = path
    cmdline = " ".join([*args, net.ip_arg()])
    say("info", f"kernel command line: {cmdline}")
    if execute:
        res = session.run(remote.kexec_cmd(staged["vmlinuz"], staged["initramfs.xz"], cmdline))
        if res.code != 0:
            raise RemoteError(f"node {session.node.name}: kexec on {session.where} failed: "
                              f"{res.err.strip()}")
    return cmdline


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            yield block


def ssh_node(node: Node) -> Node:
    """``node``, checked to have an ``ssh:`` section."""
    if node.ssh is None:
        from ..errors import InputError, Problem

        raise InputError(Problem(f"nodes.{node.name}.ssh",
                                 "install-ssh needs the node's ssh section (address, user, "
                                 "keyRef)"))
    return node
