"""install-ssh's pure parts: disk refusals from lsblk/findmnt answers, remote commands and
their parsing, the image reader (size, SHA-256, prefix, sidecar cache)."""

from __future__ import annotations

import hashlib
import json
import lzma
from pathlib import Path

import pytest

from cloudctl.errors import InputError
from cloudctl.ssh import remote
from cloudctl.ssh.disk import parse_lsblk, refusals
from cloudctl.ssh.image import inspect, prefix_sha256, raw_chunks
from cloudctl.ssh.install import _skip

GiB = 1 << 30

# util-linux 2.38 (numbers and booleans) with a partitioned disk
SDA = json.dumps({"blockdevices": [{
    "name": "sda", "path": "/dev/sda", "type": "disk", "size": 100 * GiB, "ro": False,
    "mountpoint": None, "pkname": None, "children": [
        {"name": "sda1", "path": "/dev/sda1", "type": "part", "size": GiB, "ro": False,
         "mountpoint": "/boot/efi", "pkname": "sda"},
        {"name": "sda2", "path": "/dev/sda2", "type": "part", "size": 4 * GiB, "ro": False,
         "mountpoint": "[SWAP]", "pkname": "sda"},
        {"name": "sda3", "path": "/dev/sda3", "type": "part", "size": 95 * GiB, "ro": False,
         "mountpoint": None, "pkname": "sda"}]}]})
# util-linux 2.33 style: strings, no PATH column value
NVME_OLD = json.dumps({"blockdevices": [{
    "name": "nvme0n1", "type": "disk", "size": str(2 * GiB), "ro": "1", "mountpoint": None}]})


def test_a_free_large_disk_may_be_written() -> None:
    disk = json.dumps({"blockdevices": [{"name": "vdb", "path": "/dev/vdb", "type": "disk",
                                         "size": 20 * GiB, "ro": False, "mountpoint": None}]})
    assert refusals(parse_lsblk(disk), "/dev/vdb", 2 * GiB, "/dev/vda1") == []


def test_every_reason_is_listed_for_a_disk_in_use() -> None:
    reasons = refusals(parse_lsblk(SDA), "/dev/sda", 2 * GiB, "/dev/sda3")
    assert "/dev/sda1 on /dev/sda is mounted at /boot/efi" in reasons
    assert "/dev/sda2 on /dev/sda is in use as swap" in reasons
    assert any("holds the running root filesystem (/dev/sda3" in r for r in reasons)


def test_btrfs_subvolume_root_source_is_recognised() -> None:
    reasons = refusals(parse_lsblk(SDA), "/dev/sda", GiB, "/dev/sda3[/@rootfs]")
    assert any("running root" in r for r in reasons)


def test_old_lsblk_strings_read_only_and_too_small() -> None:
    reasons = refusals(parse_lsblk(NVME_OLD), "/dev/nvme0n1", 3 * GiB, "")
    assert "/dev/nvme0n1 is read-only" in reasons
    assert any(r.startswith("/dev/nvme0n1 is too small: 2.0 GiB") for r in reasons)


def test_a_partition_is_not_a_whole_disk() -> None:
    part = json.dumps({"blockdevices": [{"name": "sda3", "path": "/dev/sda3", "type": "part",
                                         "size": 95 * GiB, "ro": False, "mountpoint": None}]})
    assert refusals(parse_lsblk(part), "/dev/sda3", GiB, "/dev/sda1") == [
        "/dev/sda3 is a part, not a whole disk"]


def test_lsblk_garbage_is_an_error() -> None:
    with pytest.raises(ValueError, match="not JSON"):
        parse_lsblk("lsblk: unknown column")
    with pytest.raises(ValueError, match="blockdevices"):
        parse_lsblk("{}")


def test_commands_quote_paths_and_resume_on_block_boundaries() -> None:
    assert remote.write_cmd("/dev/disk/by-id/a b", 8 << 20) == \
        "dd of='/dev/disk/by-id/a b' bs=4194304 seek=2 conv=notrunc,fsync"
    with pytest.raises(ValueError):
        remote.write_cmd("/dev/sda", 1000)
    assert remote.sha256_cmd("/dev/sda", 42) == "head -c 42 /dev/sda | sha256sum"
    assert remote.parse_sha256("a" * 64 + "  -\n") == "a" * 64
    assert remote.parse_sha256("sha256sum: not found") is None


def test_network_parsing_prefers_the_default_route_interface() -> None:
    out = ("2: eth0    inet 10.0.0.5/24 brd 10.0.0.255 scope global eth0\\\n"
           "3: enp1s0    inet 203.0.113.7/26 brd 203.0.113.63 scope global enp1s0\\\n"
           "--\ndefault via 203.0.113.1 dev enp1s0 proto static\n--\nrescue-7\n")
    net = remote.parse_network(out, "10.0.0.5")
    assert net is not None
    assert net.ip_arg() == "ip=203.0.113.7::203.0.113.1:255.255.255.192:rescue-7:enp1s0:off"
    no_route = remote.parse_network(out.replace("default via 203.0.113.1 dev enp1s0 "
                                                "proto static\n", ""), "10.0.0.5")
    assert no_route is not None and no_route.ip_arg() == \
        "ip=10.0.0.5:::255.255.255.0:rescue-7:eth0:off"
    assert remote.parse_network("garbage", "10.0.0.5") is None


def test_image_size_sha_prefix_and_sidecar(tmp_path: Path) -> None:
    raw = bytes(range(256)) * 9000 + b"tail"
    xz = tmp_path / "metal-amd64.raw.xz"
    xz.write_bytes(lzma.compress(raw))
    img = inspect(xz)
    assert img.compressed and img.size == len(raw)
    assert img.sha256 == hashlib.sha256(raw).hexdigest()
    assert b"".join(raw_chunks(img, chunk=4096)) == raw
    assert prefix_sha256(img, 5000) == hashlib.sha256(raw[:5000]).hexdigest()
    sidecar = json.loads((tmp_path / "metal-amd64.raw.xz.raw.json").read_text())
    assert sidecar["raw_size"] == len(raw)
    # the sidecar answers the next time (a wrong value there would be believed: it is keyed
    # by size and mtime, so a rewritten image is read again)
    assert inspect(xz) == img
    plain = tmp_path / "disk.raw"
    plain.write_bytes(raw)
    assert not inspect(plain).compressed and inspect(plain).sha256 == img.sha256


def test_corrupt_or_empty_images_are_input_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.raw.xz"
    bad.write_bytes(lzma.compress(b"x" * 100000)[:-40] + b"\0" * 40)
    with pytest.raises(InputError, match="corrupt xz"):
        inspect(bad)
    empty = tmp_path / "empty.raw"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        inspect(empty)
    with pytest.raises(InputError, match="image"):
        inspect(tmp_path / "missing.raw.xz")


def test_skip_drops_exactly_the_resumed_prefix() -> None:
    blocks = [b"a" * 10, b"b" * 10, b"c" * 10]
    assert b"".join(_skip(iter(blocks), 15)) == b"b" * 5 + b"c" * 10
    assert b"".join(_skip(iter(blocks), 0)) == b"".join(blocks)
    assert b"".join(_skip(iter(blocks), 30)) == b""
