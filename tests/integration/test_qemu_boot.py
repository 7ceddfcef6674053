"""Real firmware end to end (root, QEMU TCG, slow: about a minute).

Two VMs on a private bridge PXE-boot from the boot service running in a network namespace:
- BIOS: SeaBIOS with QEMU's iPXE option ROM for virtio-net (DHCP -> per-MAC script -> HTTP);
- UEFI: OVMF with the NIC's option ROM disabled (``romfile=``), so the firmware's own PXE
  fetches snponly.efi over TFTP, which then DHCPs as iPXE and fetches the script.
Each boots a Debian cloud kernel (fetched with ``apt-get download``, cached) and a busybox
initramfs built here whose init prints /proc/cmdline on the serial console and powers off; the
test asserts the per-MAC kernel arguments. DHCP requests from the firmware can be recorded for
the codec tests with ``CLOUDCTL_RECORD_DHCP=1``.
"""

from __future__ import annotations

import glob
import lzma
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest
from netns import Lab, LoopInNetns, require_root, with_catalog_versions

from cloudctl.boot.dhcp.codec import decode
from cloudctl.boot.dhcp.transport import DhcpServer
from cloudctl.boot.events import BootEvent
from cloudctl.boot.service import BootService
from cloudctl.inventory import parse_inventory

pytestmark = [pytest.mark.root, pytest.mark.qemu, pytest.mark.slow]

CACHE = Path(os.environ.get("CLOUDCTL_TEST_CACHE", "/var/cache/cloudctl-tests"))
DATA = Path(__file__).resolve().parent.parent / "data" / "dhcp"
RECORD = os.environ.get("CLOUDCTL_RECORD_DHCP") == "1"
IPXE_DIR = Path("/usr/lib/ipxe")
BIOS_ROM = IPXE_DIR / "qemu" / "efi-virtio.rom"  # QEMU's default ROM for virtio-net-pci
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
BIOS_MAC, UEFI_MAC = "52:54:00:10:00:31", "52:54:00:10:00:32"
BOOT_TIMEOUT = 240.0

INVENTORY = f"""
cluster:
  name: qemu
  talosVersion: TALOS_VERSION
  kubernetesVersion: K8S_VERSION
  vip: 10.20.0.10
network:
  interface: eth0
  bootServer: 10.20.0.2
  subnet: 10.20.0.0/24
  gateway: 10.20.0.1
  dhcp: {{mode: MODE, leaseTime: 600}}
platform: {{metallb: {{enabled: false}}}}
nodes:
  - name: bios-vm
    role: controlplane
    macs: ["{BIOS_MAC}"]
    ip: 10.20.0.31
    installDisk: /dev/vda
    kernelArgs: [cloudctl.test=bios-vm]
  - name: uefi-vm
    role: worker
    macs: ["{UEFI_MAC}"]
    ip: 10.20.0.32
    installDisk: /dev/vda
    kernelArgs: [cloudctl.test=uefi-vm]
"""

INIT = """#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo "CLOUDCTL-CMDLINE: $(/bin/busybox cat /proc/cmdline)"
echo o > /proc/sysrq-trigger
/bin/busybox sleep 10
"""


def _prerequisites() -> None:
    require_root("network namespaces, tap devices, DHCP ports")
    for tool in ("qemu-system-x86_64", "apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
    for f in (BIOS_ROM, OVMF_CODE, OVMF_VARS, IPXE_DIR / "snponly.efi", Path("/bin/busybox")):
        if not f.is_file():
            pytest.skip(f"{f} missing (Debian packages ipxe, ipxe-qemu, ovmf, busybox-static)")


def debian_kernel() -> Path:
    """A Debian cloud kernel, downloaded once with apt-get and unpacked with dpkg-deb."""
    kdir = CACHE / "kernel"
    found = sorted(glob.glob(str(kdir / "x" / "boot" / "vmlinuz-*")))
    if found:
        return Path(found[-1])
    kdir.mkdir(parents=True, exist_ok=True)
    names = subprocess.run(
        ["apt-cache", "search", "--names-only", r"^linux-image-[0-9.-]+-cloud-amd64-unsigned$"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    pkgs = sorted(n for n in names if n.startswith("linux-image-"))
    if not pkgs:
        pytest.skip("no linux-image-*-cloud-amd64-unsigned in the apt lists (apt-get update?)")
    res = subprocess.run(
        ["apt-get", "download", pkgs[-1]], cwd=kdir, capture_output=True, text=True, timeout=600
    )
    debs = sorted(kdir.glob("linux-image-*.deb"))
    if res.returncode != 0 or not debs:
        pytest.skip(f"apt-get download {pkgs[-1]} failed: {res.stderr.strip()[-300:]}")
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(kdir / "x")], check=True)
    return Path(sorted(glob.glob(str(kdir / "x" / "boot" / "vmlinuz-*")))[-1])


def _newc(entries: list[tuple[str, int, bytes, tuple[int, int]]]) -> bytes:
    """A cpio 'newc' archive: (name, mode, data, (rdev major, minor))."""
    out = bytearray()

    def pad4() -> None:
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data, (rmaj, rmin)) in enumerate(
        [*entries, ("TRAILER!!!", 0, b"", (0, 0))], start=1
    ):
        raw = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rmaj, rmin, len(raw), 0]
        out += b"070701" + b"".join(f"{v:08x}".encode() for v in fields)
        out += raw
        pad4()
        out += data
        pad4()
    return bytes(out)


def build_initramfs(dest: Path) -> Path:
    busybox = Path("/bin/busybox").read_bytes()
    archive = _newc(
        [
            ("bin", stat.S_IFDIR | 0o755, b"", (0, 0)),
            ("dev", stat.S_IFDIR | 0o755, b"", (0, 0)),
            ("proc", stat.S_IFDIR | 0o755, b"", (0, 0)),
            ("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)),
            ("bin/busybox", stat.S_IFREG | 0o755, busybox, (0, 0)),
            ("init", stat.S_IFREG | 0o755, INIT.encode(), (0, 0)),
        ]
    )
    dest.write_bytes(lzma.compress(archive, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32))
    return dest


def qemu_argv(kind: str, mac: str, tap: str, serial: Path, vars_file: Path) -> list[str]:
    argv = [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-m",
        "512",
        "-smp",
        "1",
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
        "-serial",
        f"file:{serial}",
        "-netdev",
        f"tap,id=n0,ifname={tap},script=no,downscript=no",
    ]
    if kind == "bios":
        argv += [
            "-machine",
            "pc",
            # QEMU's own iPXE ROM for the NIC (default romfile, package ipxe-qemu)
            "-device",
            f"virtio-net-pci,netdev=n0,mac={mac},bootindex=1",
        ]
    else:
        argv += [
            "-machine",
            "q35",
            "-drive",
            f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
            "-drive",
            f"if=pflash,format=raw,file={vars_file}",
            "-device",
            f"virtio-net-pci,netdev=n0,mac={mac},romfile=,bootindex=1",
        ]
    return argv


def _cmdline(serial: Path) -> str | None:
    text = serial.read_bytes().decode(errors="replace") if serial.exists() else ""
    for line in text.splitlines():
        if line.startswith("CLOUDCTL-CMDLINE: "):
            return line.split(": ", 1)[1].strip()
    return None


@pytest.mark.parametrize("mode", ["full", "proxy"])
def test_bios_and_uefi_vms_boot_the_served_kernel(tmp_path, monkeypatch, mode):
    """full: cloudctl is the only DHCP server. proxy: a dnsmasq on the segment hands out the
    addresses (10.20.0.100-150) and cloudctl only the boot options (ProxyDHCP on :67/:4011)."""
    _prerequisites()
    if mode == "proxy" and shutil.which("dnsmasq") is None:
        pytest.skip("dnsmasq not installed")
    kernel = debian_kernel()
    initrd = build_initramfs(tmp_path / "initramfs.xz")
    root = tmp_path / "tftp"
    root.mkdir()
    for name in ("undionly.kpxe", "snponly.efi", "ipxe.efi"):
        shutil.copy(IPXE_DIR / name, root / name)
    vars_file = tmp_path / "OVMF_VARS.fd"
    shutil.copy(OVMF_VARS, vars_file)

    recorded: list[bytes] = []
    handle = DhcpServer.handle

    def recording(self, data, addr, port):
        recorded.append(data)
        return handle(self, data, addr, port)

    monkeypatch.setattr(DhcpServer, "handle", recording)
    events: list[BootEvent] = []
    inv = parse_inventory(
        with_catalog_versions(INVENTORY.replace("MODE", mode)), "qemu.yaml"
    ).inventory
    svc = BootService(
        inv,
        assets={"kernel": kernel, "initramfs.xz": initrd},
        tftp_root=root,
        timeout=BOOT_TIMEOUT,
        probe_wait=0.5,
        on_event=events.append,
    )
    serial = {"bios": tmp_path / "bios.log", "uefi": tmp_path / "uefi.log"}
    vms: dict[str, subprocess.Popen] = {}
    with Lab("qb") as lab:
        srv = lab.add_host("srv", ip="10.20.0.2/24")
        taps = {"bios": lab.add_tap("tapb"), "uefi": lab.add_tap("tapu")}
        site_dhcp = None
        if mode == "proxy":
            site = lab.add_host("site", ip="10.20.0.1/24")
            site_dhcp = site.popen(
                [
                    "dnsmasq",
                    "--no-daemon",
                    "--port=0",
                    "--interface=eth0",
                    "--bind-interfaces",
                    "--conf-file=/dev/null",
                    "--dhcp-range=10.20.0.100,10.20.0.150,10m",
                    f"--dhcp-leasefile={tmp_path / 'site.leases'}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        with LoopInNetns(srv.ns) as loop:
            started = time.monotonic()
            fut = loop.submit(svc.run())
            time.sleep(1.0)
            try:
                for kind, mac in (("bios", BIOS_MAC), ("uefi", UEFI_MAC)):
                    argv = qemu_argv(kind, mac, taps[kind], serial[kind], vars_file)
                    vms[kind] = subprocess.Popen(
                        lab.switch_cmd(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
                    )
                result = fut.result(BOOT_TIMEOUT + 30)
                served = time.monotonic() - started
                # the kernels boot after the service stopped: wait for them to print and power off
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline and any(
                    p.poll() is None and _cmdline(serial[k]) is None for k, p in vms.items()
                ):
                    time.sleep(1)
                total = time.monotonic() - started
            finally:
                for p in vms.values():
                    if p.poll() is None:
                        p.kill()
                    p.wait(10)
                if site_dhcp is not None:
                    site_dhcp.terminate()
                    site_dhcp.wait(10)
    if RECORD and mode == "full":
        _save(recorded)
    logs = {k: serial[k].read_bytes().decode(errors="replace")[-3000:] for k in serial}
    assert result.complete, (result, logs)
    print(f"\nboot service done after {served:.1f}s, both kernels printed after {total:.1f}s")
    print(
        "\n".join(
            f"{e.mac} {e.kind} {e.detail} {e.path}" for e in events if e.kind.startswith("dhcp-")
        )
    )
    bios, uefi = _cmdline(serial["bios"]), _cmdline(serial["uefi"])
    assert bios is not None, logs["bios"]
    assert uefi is not None, logs["uefi"]
    for line, who in ((bios, "bios-vm"), (uefi, "uefi-vm")):
        args = line.split()
        for required in (
            "talos.platform=metal",
            "slab_nomerge",
            "pti=on",
            "init_on_alloc=1",
            "printk.devkmsg=on",
            "console=ttyS0",
            f"cloudctl.test={who}",
        ):
            assert required in args, (required, line)
        assert not any(a.startswith("talos.config=") for a in args)  # maintenance mode
    assert "cloudctl.test=uefi-vm" not in bios.split()
    assert "initrd=initramfs.xz" in uefi.split()  # EFI stub loads the initrd by name
    phases = result.nodes
    assert {"offered", "script", "kernel", "initramfs"} <= set(phases["bios-vm"])
    assert {"offered", "boot-file", "script", "kernel", "initramfs"} <= set(phases["uefi-vm"])
    # (boot-file: the firmware's PXE fetched snponly.efi over TFTP)
    # the segment's IPv6 router solicitations (the VMs' iPXE, the lab's own interfaces) got the
    # quiet advertisement (multicast: one answer ends every waiting client's IPv6 wait);
    # bench/lab.py measures what that saves against dnsmasq + nginx
    assert any(e.kind == "ra-sent" for e in events), "no router advertisement was sent"
    if mode == "full":
        assert "acked" in phases["bios-vm"] and "acked" in phases["uefi-vm"]
    else:
        # the addresses came from dnsmasq; cloudctl learnt them from the clients' REQUESTs
        learned = {str(ip) for ip in svc.dhcp.state.seen.values()} if svc.dhcp else set()
        assert learned and all(ip.startswith("10.20.0.1") for ip in learned), learned


def _save(recorded: list[bytes]) -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    for data in recorded:
        msg = decode(data)
        if msg.mac == BIOS_MAC:
            who = "ipxe-rom-bios"
        elif msg.mac == UEFI_MAC:
            who = "ipxe-snponly" if msg.is_ipxe else "ovmf"
        else:
            continue
        name = f"{who}-{msg.type_name.lower()}.bin"
        if name not in seen:
            seen.add(name)
            (DATA / name).write_bytes(data)
