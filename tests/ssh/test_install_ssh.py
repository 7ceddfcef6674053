"""``cloudctl install-ssh`` against a real OpenSSH server whose disks are loop devices.

The server (tests/ssh/sshhost.py) runs in its own network, mount and PID namespaces with
recording stand-ins for reboot and kexec; cloudctl runs in a second namespace on the same
segment, as it would on an operator's machine. Root only.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import lzma
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from netns import require_root
from sshhost import NODE_IP, SshHost

ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20
IMAGE_SIZE = 20 * MiB


def _raw_image() -> bytes:
    """A disk-image-like payload: incompressible blocks between long runs of zeros."""
    rnd = hashlib.sha256(b"cloudctl").digest()
    block = b"".join(hashlib.sha256(rnd + bytes([i])).digest() for i in range(256)) * 64
    data = bytearray(IMAGE_SIZE)
    for start in (0, 5 * MiB, 13 * MiB, IMAGE_SIZE - len(block)):
        data[start:start + len(block)] = block
    return bytes(data)


@pytest.fixture(scope="module")
def host():
    require_root("an OpenSSH server in network, mount and PID namespaces, loop devices")
    with SshHost("is") as h:
        yield h


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> tuple[Path, bytes]:
    raw = _raw_image()
    path = tmp_path_factory.mktemp("img") / "metal-amd64.raw.xz"
    path.write_bytes(lzma.compress(raw, preset=1))
    return path, raw


def _inventory(tmp: Path, host: SshHost, disk: str, **ssh: object) -> Path:
    doc = yaml.safe_load((ROOT / "inventory.example.yaml").read_text())
    node = doc["nodes"][-1]
    node["boot"] = "ssh"
    node["ssh"] = {"address": NODE_IP, "keyRef": f"file:{host.client_key}", "disk": disk,
                   **ssh}
    path = tmp / "inventory.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _node_name() -> str:
    return yaml.safe_load((ROOT / "inventory.example.yaml").read_text())["nodes"][-1]["name"]


def _cloudctl(host: SshHost, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": "/nonexistent-cache"}
    return subprocess.run(host.ctl.cmd([sys.executable, "-m", "cloudctl.cli", *args]),
                          capture_output=True, text=True, timeout=timeout, env=env)


def _disk_sha(disk: str, size: int = IMAGE_SIZE) -> str:
    return SshHost.sha256(disk, size)


def _key_secret_lines(host: SshHost) -> list[str]:
    return [ln for ln in host.client_key.read_text().splitlines()
            if ln and not ln.startswith("-----")]


def test_image_lands_byte_exact_then_the_host_reboots(host, image, tmp_path):
    path, raw = image
    disk = host.disk(64 * MiB)
    inv = _inventory(tmp_path, host, disk)
    before = len(host.calls())
    run = _cloudctl(host, "install-ssh", "-i", str(inv), "--image", str(path),
                    "--accept-new-host-key")
    assert run.returncode == 0, run.stderr
    # byte-exact on the device, and the host-side check said so
    assert _disk_sha(disk) == hashlib.sha256(raw).hexdigest()
    assert "verified" in run.stderr and "%" in run.stderr, run.stderr
    assert "100% 20.0 MiB of 20.0 MiB" in run.stderr
    assert "xz-decompressed while streaming" in run.stderr
    # reboot requested after the write (the stand-in records it, 2 s after the session ends)
    host.wait_for_call("reboot", after=before)
    # the host key was pinned; the secret key is in no output and no event
    known = (tmp_path / "clusters" / "rack1" / "known_hosts").read_text()
    assert host.known_hosts_line().split()[2] in known
    events = (tmp_path / "clusters" / "rack1" / "events.jsonl").read_text()
    for line in _key_secret_lines(host):
        assert line not in run.stdout + run.stderr + events
    assert any(json.loads(e)["kind"] == "progress" for e in events.splitlines())

    # run twice: the pinned key is accepted without the flag, the disk is not written again
    again = _cloudctl(host, "install-ssh", "-i", str(inv), "--image", str(path),
                      "--no-reboot")
    assert again.returncode == 0, again.stderr
    assert "already holds this image (SHA-256 verified); not written again" in again.stderr


def test_interrupted_write_resumes_after_the_verified_prefix(host, image, tmp_path):
    path, raw = image
    disk = host.disk(64 * MiB)
    inv = _inventory(tmp_path, host, disk)
    (tmp_path / "clusters" / "rack1").mkdir(parents=True)
    (tmp_path / "clusters" / "rack1" / "known_hosts").write_text(host.known_hosts_line())
    # what an interrupted run leaves: 8 MiB on the disk, a record saying 9 MiB were sent
    with open(disk, "r+b") as f:
        f.write(raw[:8 * MiB])
    state = tmp_path / "clusters" / "rack1" / "install-ssh"
    state.mkdir()
    (state / f"{_node_name()}.json").write_text(json.dumps({
        "disk": disk, "sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw),
        "sent": 9 * MiB, "done": False}))
    run = _cloudctl(host, "install-ssh", "-i", str(inv), "--image", str(path), "--no-reboot")
    assert run.returncode == 0, run.stderr
    assert "resuming at 8.0 MiB" in run.stderr
    assert _disk_sha(disk) == hashlib.sha256(raw).hexdigest()

    # a record the disk does not back up (someone wrote over it) starts over
    with open(disk, "r+b") as f:
        f.write(b"\xff" * MiB)
    (state / f"{_node_name()}.json").write_text(json.dumps({
        "disk": disk, "sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw),
        "sent": 12 * MiB, "done": False}))
    run = _cloudctl(host, "install-ssh", "-i", str(inv), "--image", str(path), "--no-reboot")
    assert run.returncode == 0, run.stderr
    assert "starting over" in run.stderr
    assert _disk_sha(disk) == hashlib.sha256(raw).hexdigest()


def _refused(host: SshHost, inv: Path, image: tuple[Path, bytes], disk: str, *extra: str,
             mounted: bool = False) -> str:
    path, raw = image
    before = _disk_sha(disk, 4 * MiB)
    calls = len(host.calls())
    run = _cloudctl(host, "install-ssh", "-i", str(inv), "--image", str(path), *extra)
    assert run.returncode == 10, (run.returncode, run.stderr)
    with open(disk, "rb") as f:
        head = f.read(MiB)
    assert head != raw[:MiB], "the image was written"
    if not mounted:  # a mounted ext4 updates its own superblock and journal
        assert _disk_sha(disk, 4 * MiB) == before, "the disk was written"
    assert host.calls()[calls:] == [], "the host was rebooted"
    return run.stderr


def test_mounted_disk_is_refused_and_nothing_written(host, image, tmp_path):
    disk = host.disk(64 * MiB)
    where = host.mount(disk)
    inv = _inventory(tmp_path, host, disk)
    err = _refused(host, inv, image, disk, "--accept-new-host-key", mounted=True)
    assert f"refusing to write the Talos image to {disk}" in err
    assert f"- {disk} is mounted at {where}" in err
    assert "nothing was written" in err


def test_disk_too_small_is_refused(host, image, tmp_path):
    disk = host.disk(16 * MiB)
    inv = _inventory(tmp_path, host, disk)
    err = _refused(host, inv, image, disk, "--accept-new-host-key")
    assert "is too small: 16.0 MiB (16777216 bytes) < the image's 20.0 MiB" in err


def test_missing_disk_is_refused(host, image, tmp_path):
    path, _ = image
    disk = host.disk(32 * MiB)
    inv = _inventory(tmp_path, host, "/dev/nonexistent-disk")
    run = _cloudctl(host, "install-ssh", "-i", str(inv), "--image", str(path),
                    "--accept-new-host-key")
    assert run.returncode == 10
    assert "/dev/nonexistent-disk is not a block device on the host" in run.stderr
    assert _disk_sha(disk, 4 * MiB) == hashlib.sha256(bytes(4 * MiB)).hexdigest()


def test_wrong_or_unknown_host_key_is_refused(host, image, tmp_path):
    disk = host.disk(64 * MiB)
    inv = _inventory(tmp_path, host, disk)
    # unknown key, no --accept-new-host-key: refused naming the fingerprint
    err = _refused(host, inv, image, disk)
    assert "is not in" in err and "SHA256:" in err and "--accept-new-host-key" in err
    # a different key pinned for that address: refused even with --accept-new-host-key
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
                   check=True)
    kind, blob = Path(f"{other}.pub").read_text().split()[:2]
    (tmp_path / "clusters" / "rack1").mkdir(parents=True, exist_ok=True)
    known = tmp_path / "clusters" / "rack1" / "known_hosts"
    known.write_text(f"{NODE_IP} {kind} {blob}\n")
    err = _refused(host, inv, image, disk, "--accept-new-host-key")
    assert "host key of 10.31.0.10:22 changed" in err
    assert "nothing was sent" in err
    assert known.read_text() == f"{NODE_IP} {kind} {blob}\n"


def test_kexec_uploads_verified_assets_and_kexecs_with_maintenance_args(host, tmp_path):
    kernel, initramfs = tmp_path / "kernel", tmp_path / "initramfs.xz"
    kernel.write_bytes(os.urandom(3 * MiB))
    initramfs.write_bytes(os.urandom(5 * MiB + 17))
    inv = _inventory(tmp_path, host, "/dev/unused", method="kexec")
    before = len(host.calls())
    run = _cloudctl(host, "install-ssh", "-i", str(inv), "--kernel", str(kernel),
                    "--initramfs", str(initramfs), "--accept-new-host-key")
    assert run.returncode == 0, run.stderr
    calls = host.wait_for_call("kexec -e", after=before)
    load = next(c for c in calls if c.startswith("kexec -l"))
    assert load.startswith("kexec -l /tmp/cloudctl-kexec/vmlinuz "
                           "--initrd=/tmp/cloudctl-kexec/initramfs.xz --command-line=")
    assert "talos.platform=metal" in load and "console=ttyS0" in load
    assert f"ip={NODE_IP}::" in load and ":255.255.255.0:" in load and ":eth0:off" in load
    staged = Path("/tmp/cloudctl-kexec")
    try:
        assert (staged / "vmlinuz").read_bytes() == kernel.read_bytes()
        assert (staged / "initramfs.xz").read_bytes() == initramfs.read_bytes()
        assert (staged / "vmlinuz").stat().st_mode & 0o077 == 0
    finally:
        for p in staged.glob("*"):
            p.unlink()
        staged.rmdir()


def test_ctrl_c_stops_the_stream_at_once_and_the_next_run_finishes(host, tmp_path):
    raw = bytes(192 * MiB)  # zeros: tiny compressed, slow enough to stream to interrupt it
    path = tmp_path / "big.raw.xz"
    path.write_bytes(lzma.compress(raw, preset=0))
    disk = host.disk(256 * MiB)
    with open(disk, "r+b") as f:  # not zeros, so a write that did not happen would show
        f.write(b"\xaa" * (192 * MiB))
    inv = _inventory(tmp_path, host, disk)
    env = {**os.environ, "XDG_CACHE_HOME": "/nonexistent-cache"}
    calls = host.calls()
    proc = subprocess.Popen(
        host.ctl.cmd([sys.executable, "-m", "cloudctl.cli", "install-ssh", "-i", str(inv),
                      "--image", str(path), "--accept-new-host-key"]),
        stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        m = re.search(r"% ([\d.]+) MiB of 192.0 MiB", line)
        if m and float(m.group(1)) >= 12:
            break
    t0 = time.monotonic()
    # ip netns exec runs cloudctl in place (exec), so the signal reaches it directly
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=30) == 130, "".join(seen) + rest
    assert time.monotonic() - t0 < 10
    assert "interrupted" in rest and "resume" in rest
    assert host.calls() == calls, "the host was rebooted"
    again = _cloudctl(host, "install-ssh", "-i", str(inv), "--image", str(path),
                      "--no-reboot")
    assert again.returncode == 0, again.stderr
    assert "resuming at" in again.stderr, again.stderr
    assert _disk_sha(disk, len(raw)) == hashlib.sha256(raw).hexdigest()


def test_bootstrap_boot_stage_installs_boot_ssh_nodes_from_the_asset_cache(host, image, tmp_path):
    """`bootstrap --only boot` with two `boot: ssh` nodes (one SSH host, two disks): the
    factory metal image comes from the asset cache (filled beforehand: no Internet), both
    disks get it, the host is asked to reboot, the stage is recorded done; the plan says how
    each node is installed."""
    from cloudctl.boot.assets import MANIFEST, disk_image_files
    from cloudctl.inventory import parse_inventory
    from cloudctl.render.schematic import schematic_for

    path, raw = image
    disks = [host.disk(32 * MiB), host.disk(32 * MiB)]
    doc = yaml.safe_load((ROOT / "inventory.example.yaml").read_text())
    doc["nodes"] = [doc["nodes"][0], doc["nodes"][-1]]
    for node, disk in zip(doc["nodes"], disks, strict=True):
        node["boot"] = "ssh"
        node["ssh"] = {"address": NODE_IP, "keyRef": f"file:{host.client_key}", "disk": disk}
    inv_path = tmp_path / "inventory.yaml"
    inv_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    shutil.copytree(ROOT / "tests/golden/secrets/rack1", tmp_path / "secrets/rack1")
    inv = parse_inventory(inv_path.read_text()).inventory
    cache = tmp_path / "cache" / "cloudctl" / "assets" / schematic_for(inv).id / \
        inv.cluster.talos_version
    cache.mkdir(parents=True)
    name = disk_image_files(inv.image.arch)["disk"]
    shutil.copy(path, cache / name)
    (cache / MANIFEST).write_text(json.dumps({name: {
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "size": path.stat().st_size}}))
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": str(tmp_path)}

    def bootstrap(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(host.ctl.cmd([sys.executable, "-m", "cloudctl.cli", "bootstrap",
                                            "-i", str(inv_path), *args]),
                              capture_output=True, text=True, timeout=180, env=env)

    plan = bootstrap("--plan", "--only", "boot")
    assert plan.returncode == 0, plan.stderr
    want = f"over SSH (root@{NODE_IP}:22): write the factory metal image to {disks[0]}"
    assert want in plan.stdout, plan.stdout
    calls = len(host.calls())
    run = bootstrap("--only", "boot", "--accept-new-host-key", "--timeout", "60", "-o", "json")
    assert run.returncode == 0, run.stderr + run.stdout
    for disk in disks:
        assert _disk_sha(disk) == hashlib.sha256(raw).hexdigest()
    assert [c for c in host.wait_for_call("reboot", after=calls)
            if c.startswith("reboot")], "no reboot"
    state = json.loads((tmp_path / "clusters/rack1/state.json").read_text())
    assert state["stages"]["boot"]["status"] == "done"
    assert "installed over SSH" in state["stages"]["boot"]["detail"]
    events = [json.loads(e) for e in run.stdout.splitlines() if e.startswith("{")]
    assert any(e.get("phase") == "install-ssh" and "%" in e["message"] for e in events)


def test_a_lost_connection_is_exit_6_and_the_next_run_resumes(host, tmp_path):
    raw = bytes(192 * MiB)
    path = tmp_path / "big.raw.xz"
    path.write_bytes(lzma.compress(raw, preset=0))
    disk = host.disk(256 * MiB)
    with open(disk, "r+b") as f:
        f.write(b"\x55" * (192 * MiB))
    inv = _inventory(tmp_path, host, disk)
    env = {**os.environ, "XDG_CACHE_HOME": "/nonexistent-cache"}
    proc = subprocess.Popen(
        host.ctl.cmd([sys.executable, "-m", "cloudctl.cli", "install-ssh", "-i", str(inv),
                      "--image", str(path), "--accept-new-host-key"]),
        stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    for line in proc.stderr:
        m = re.search(r"% ([\d.]+) MiB of 192.0 MiB", line)
        if m and float(m.group(1)) >= 12:
            break
    # the session's sshd process dies (the network went away): not the listener
    sessions = subprocess.run(["pgrep", "-f", "sshd: root@notty"], capture_output=True,
                              text=True).stdout.split()
    assert sessions, "no sshd session process"
    for pid in sessions:
        os.kill(int(pid), signal.SIGKILL)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 6, rest
    assert "lost" in rest or "stopped at" in rest, rest
    again = _cloudctl(host, "install-ssh", "-i", str(inv), "--image", str(path),
                      "--no-reboot")
    assert again.returncode == 0, again.stderr
    assert "resuming at" in again.stderr or "starting over" in again.stderr, again.stderr
    assert _disk_sha(disk, len(raw)) == hashlib.sha256(raw).hexdigest()


def test_a_second_writer_of_the_same_node_is_refused(host, image, tmp_path):
    """While one install-ssh writes a node's disk (it holds <cluster dir>/install-ssh/<node>
    .lock), another one of the same node refuses at once (exit 5) and writes nothing."""
    path, raw = image
    disk = host.disk(64 * MiB)
    inv = _inventory(tmp_path, host, disk)
    lock = tmp_path / "clusters" / "rack1" / "install-ssh" / f"{_node_name()}.lock"
    lock.parent.mkdir(parents=True)
    with lock.open("a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        run = _cloudctl(host, "install-ssh", "-i", str(inv), "--image", str(path),
                        "--accept-new-host-key")
    assert run.returncode == 5, run.stderr
    assert "another install-ssh is writing its disk right now" in run.stderr
    with open(disk, "rb") as f:
        assert f.read(MiB) != raw[:MiB]
