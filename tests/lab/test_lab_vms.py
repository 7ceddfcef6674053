"""A real lab end to end (root, libvirt, QEMU TCG, about 1-2 minutes).

``cloudctl lab up`` builds two VMs from the inventory: one BIOS on a Redfish BMC (sushy-tools),
one UEFI with two NICs on an IPMI BMC (virtualbmc), in the lab's network namespace. Through
those emulators ``cloudctl power pxe-once`` and ``power on`` start them; both network-boot the
test kernel (a Debian cloud kernel and a busybox initramfs whose init prints /proc/cmdline and
powers off) from ``cloudctl pxe serve`` running on the lab bridge; the Talos kernel arguments are
read from the serial console logs. ``power status`` says on, then off once the guests powered
themselves off. A wrong BMC password fails naming node and BMC; ``lab up`` twice changes
nothing; ``lab down`` leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from netns import require_root, with_catalog_versions
from test_qemu_boot import build_initramfs, debian_kernel

pytestmark = [pytest.mark.root, pytest.mark.qemu, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "lab-bmc-S3cret"
CLUSTER = "labtest"
NS = f"cloudctl-lab-{CLUSTER}"
TOOLS = ("libvirtd", "qemu-system-x86_64", "qemu-img", "ip", "ss", "unshare", "apt-get")
FILES = ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd",
         "/usr/lib/ipxe/snponly.efi", "/usr/lib/ipxe/qemu/efi-virtio.rom", "/bin/busybox")
MODULES = ("libvirt", "sushy_tools", "virtualbmc", "pyghmi", "bcrypt")

INVENTORY = f"""
cluster: {{name: {CLUSTER}, talosVersion: TALOS_VERSION, kubernetesVersion: K8S_VERSION,
          vip: 10.20.0.10}}
network:
  interface: eth0
  bootServer: 10.20.0.2
  subnet: 10.20.0.0/24
  gateway: 10.20.0.1
  dhcp: {{mode: full, leaseTime: 600}}
platform: {{metallb: {{enabled: false}}}}
lab: {{memoryMib: 512, cpus: 1, systemDiskGib: 2, dataDiskGib: 1, accel: auto}}
nodes:
  - name: bios-vm
    role: controlplane
    macs: ["52:54:00:10:00:41"]
    ip: 10.20.0.41
    installDisk: /dev/vda
    firmware: bios
    kernelArgs: [cloudctl.test=bios-vm]
    bmc: {{type: redfish, address: 10.30.0.41, username: admin, passwordRef: env:LABTEST_PW}}
  - name: uefi-vm
    role: worker
    macs: ["52:54:00:10:00:42", "52:54:00:10:01:42"]
    ip: 10.20.0.42
    installDisk: /dev/vda
    firmware: uefi
    kernelArgs: [cloudctl.test=uefi-vm]
    bmc: {{type: ipmi, address: 10.30.0.42, username: admin, passwordRef: env:LABTEST_PW}}
"""


def _missing(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (CI installs it: .ci/run)")
    pytest.skip(what)


def _prerequisites() -> None:
    require_root("network namespaces, bridges, a private libvirtd")
    for tool in TOOLS:
        if shutil.which(tool) is None:
            _missing(f"{tool} not installed")
    for f in FILES:
        if not Path(f).is_file():
            _missing(f"{f} missing (Debian ovmf, ipxe, ipxe-qemu, busybox-static)")
    for mod in MODULES:
        try:
            __import__(mod)
        except ImportError:
            _missing(f"Python module {mod} missing (pip install -e '.[test]')")


class Cli:
    def __init__(self, cwd: Path, inventory: Path) -> None:
        self.cwd = cwd
        self.inventory = inventory
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "LABTEST_PW": PASSWORD}

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-c", "from cloudctl.cli import main; main()", *args,
                "-i", str(self.inventory)]

    def __call__(self, *args: str, password: str = PASSWORD, timeout: float = 120,
                 ok: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(self.argv(*args), cwd=self.cwd, capture_output=True, text=True,
                             timeout=timeout, env={**self.env, "LABTEST_PW": password})
        if ok:
            assert res.returncode == 0, (args, res.returncode, res.stdout, res.stderr)
        assert PASSWORD not in res.stdout + res.stderr and password not in res.stdout + res.stderr
        return res

    def power(self, action: str) -> dict[str, str]:
        out = json.loads(self(*["power", action, "--lab", "-o", "json"]).stdout)
        return {r["node"]: r["state"] for r in out}


def _snapshot(lab_dir: Path) -> dict[str, object]:
    """What a second ``lab up`` must not change: domain XML, processes, disks, configs."""
    import libvirt

    from cloudctl.lab.spec import run_dir

    conn = libvirt.open(f"qemu:///system?socket={run_dir(CLUSTER) / 'libvirt-sock'}")
    try:
        doms = {d.name(): d.XMLDesc() for d in conn.listAllDomains()}
    finally:
        conn.close()
    files = {str(p.relative_to(lab_dir)): (p.stat().st_mtime_ns, p.stat().st_size)
             for p in lab_dir.rglob("*") if p.is_file() and p.parent.name != "log"
             and "libvirt" not in p.parts}
    return {"domains": doms, "files": files}


def _cmdline(log: Path) -> str | None:
    text = log.read_bytes().decode(errors="replace") if log.exists() else ""
    for line in text.splitlines():
        if line.startswith("CLOUDCTL-CMDLINE: "):
            return line.split(": ", 1)[1].strip()
    return None


def _leftovers(lab_dir: Path) -> list[str]:
    out = []
    if Path("/run/netns", NS).exists():
        out.append(f"namespace {NS}")
    if lab_dir.exists():
        out.append(f"directory {lab_dir}")
    if Path("/run/cloudctl-lab", CLUSTER).exists():
        out.append(f"/run/cloudctl-lab/{CLUSTER}")
    marker = str(lab_dir).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            blob = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if state != "Z" and (marker in blob or f"guest={CLUSTER}-".encode() in blob):
            out.append(f"process {entry.name}: {blob[:120]!r}")
    return out


def test_lab_vms_boot_through_bmc_emulators(tmp_path: Path) -> None:
    _prerequisites()
    kernel = debian_kernel()
    initrd = build_initramfs(tmp_path / "initramfs.xz")
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(with_catalog_versions(INVENTORY))
    lab_dir = tmp_path / "clusters" / CLUSTER / "lab"
    cli = Cli(tmp_path, inventory)
    pxe: subprocess.Popen[str] | None = None
    t0 = time.monotonic()
    try:
        first = cli("lab", "up", timeout=180)
        assert "ready" in first.stdout and "defined domain labtest-uefi-vm (uefi" in first.stdout
        before = _snapshot(lab_dir)
        assert set(before["domains"]) == {"labtest-bios-vm", "labtest-uefi-vm"}  # type: ignore[arg-type]
        second = cli("lab", "up")
        assert f"lab {CLUSTER} unchanged" in second.stdout, second.stdout
        assert _snapshot(lab_dir) == before
        t_up = time.monotonic() - t0

        status = json.loads(cli("lab", "status", "-o", "json").stdout)
        vms = {v["node"]: v for v in status["vms"]}
        assert status["up"] is True and status["namespace"] == NS
        assert vms["bios-vm"]["firmware"] == "bios" and vms["uefi-vm"]["firmware"] == "uefi"
        assert vms["bios-vm"]["bmc"] == "redfish https://10.30.0.41:443"
        assert vms["uefi-vm"]["bmc"] == "ipmi ipmi://10.30.0.42:623"
        assert {v["power"] for v in vms.values()} == {"off"}
        assert {v["emulator"] for v in vms.values()} == {"running"}
        assert cli.power("status") == {"bios-vm": "off", "uefi-vm": "off"}

        wrong = cli("power", "status", "--lab", password="not-the-password", ok=False)
        assert wrong.returncode == 6, wrong.stderr
        assert ("node bios-vm: Redfish BMC https://10.30.0.41:443: authentication failed"
                in wrong.stderr), wrong.stderr
        assert ("node uefi-vm: IPMI BMC 10.30.0.42:623: authentication failed"
                in wrong.stderr), wrong.stderr

        # the password is only in 0600 files (bcrypt htpasswd, virtualbmc's domain config)
        for p in lab_dir.rglob("*"):
            if p.is_file() and p.stat().st_size < 1 << 20 and PASSWORD.encode() in p.read_bytes():
                assert p.stat().st_mode & 0o077 == 0, p

        pxe = subprocess.Popen(
            ["ip", "netns", "exec", NS, *cli.argv(
                "pxe", "serve", "--kernel", str(kernel), "--initramfs", str(initrd),
                "--timeout", "240", "-o", "json")],
            cwd=tmp_path, env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_listening("tcp", "10.20.0.2:8080", pxe)
        t_on = time.monotonic()
        assert cli.power("pxe-once") == {"bios-vm": "next boot: network (once)",
                                         "uefi-vm": "next boot: network (once)"}
        assert cli.power("on") == {"bios-vm": "on", "uefi-vm": "on"}
        assert cli.power("status") == {"bios-vm": "on", "uefi-vm": "on"}
        out, err = pxe.communicate(timeout=300)
        assert pxe.returncode == 0, err[-2000:]
        result = json.loads(out.strip().splitlines()[-1])
        assert result["result"] == "complete", result
        logs = {n: Path(vms[n]["console_log"]) for n in vms}
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and any(_cmdline(p) is None for p in logs.values()):
            time.sleep(1)
        t_booted = time.monotonic() - t_on
        lines = {n: _cmdline(p) for n, p in logs.items()}
        tails = {n: p.read_bytes()[-2000:] for n, p in logs.items() if p.exists()}
        for node, line in lines.items():
            assert line is not None, (node, tails)
            args = line.split()
            for required in ("talos.platform=metal", "slab_nomerge", "pti=on",
                             "init_on_alloc=1", "printk.devkmsg=on", "console=ttyS0",
                             f"cloudctl.test={node}"):
                assert required in args, (node, required, line)
            assert not any(a.startswith("talos.config=") for a in args)
        assert "initrd=initramfs.xz" in lines["uefi-vm"].split()  # type: ignore[union-attr]
        assert {"offered", "script", "kernel", "initramfs"} <= set(result["nodes"]["bios-vm"])
        # the UEFI firmware's own PXE fetched iPXE over TFTP first
        assert {"boot-file", "script", "kernel", "initramfs"} <= set(result["nodes"]["uefi-vm"])

        # the guests power themselves off (sysrq o): the BMCs say so
        deadline = time.monotonic() + 120
        states = cli.power("status")
        while time.monotonic() < deadline and set(states.values()) != {"off"}:
            time.sleep(2)
            states = cli.power("status")
        assert states == {"bios-vm": "off", "uefi-vm": "off"}
        print(f"\nlab up (twice) {t_up:.1f}s; power-on to both kernels booted {t_booted:.1f}s")
    finally:
        if pxe is not None and pxe.poll() is None:
            pxe.kill()
            pxe.communicate(timeout=10)
        down = subprocess.run(cli.argv("lab", "down"), cwd=tmp_path, env=cli.env,
                              capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert "removed domain labtest-bios-vm" in down.stdout
    assert _leftovers(lab_dir) == []
    again = cli("lab", "down")
    assert "nothing to remove" in again.stdout


def _wait_listening(proto: str, addr: str, proc: subprocess.Popen[str]) -> None:
    """Wait (up to 30 s) for the boot service to listen in the lab namespace."""
    deadline = time.monotonic() + 30
    flag = "-Hltn" if proto == "tcp" else "-Hlun"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"pxe serve exited early: {proc.communicate()[1][-2000:]}")
        ss = subprocess.run(["ip", "netns", "exec", NS, "ss", flag], capture_output=True,
                            text=True).stdout
        if addr in ss:
            return
        time.sleep(0.3)
    pytest.fail(f"the boot service does not listen on {addr} after 30 s")


def test_interrupted_lab_up_is_cleaned_by_lab_down(tmp_path: Path) -> None:
    """Ctrl-C while ``lab up`` waits for libvirtd: exit 130 naming what to do; a lab of the same
    cluster from another directory is refused; ``lab down`` removes the partial lab."""
    _prerequisites()
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(with_catalog_versions(INVENTORY))
    lab_dir = tmp_path / "clusters" / CLUSTER / "lab"
    cli = Cli(tmp_path, inventory)
    up = subprocess.Popen(cli.argv("lab", "up"), cwd=tmp_path, env=cli.env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (lab_dir / "pids" / "libvirtd.pid").exists():
            assert up.poll() is None, up.communicate()
            assert time.monotonic() < deadline, "lab up did not start libvirtd within 30 s"
            time.sleep(0.05)
        up.send_signal(2)  # SIGINT, as Ctrl-C
        out, err = up.communicate(timeout=30)
        assert up.returncode == 130, (out, err)
        assert "cloudctl lab down" in err
        assert Path("/run/netns", NS).exists()  # a partial lab is there

        other = cli("lab", "up", "--cluster-dir", str(tmp_path / "elsewhere"), ok=False)
        assert other.returncode == 5, other.stderr
        assert f"a lab for cluster {CLUSTER} already runs from {lab_dir}" in other.stderr
    finally:
        if up.poll() is None:
            up.kill()
            up.communicate(timeout=10)
        down = subprocess.run(cli.argv("lab", "down"), cwd=tmp_path, env=cli.env,
                              capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert _leftovers(lab_dir) == []


def test_bootstrap_lab_boot_stage_powers_the_vms_through_their_bmcs(tmp_path: Path) -> None:
    """``bootstrap --lab --only boot --kernel K --initramfs I``: the plan names each node's BMC;
    a wrong BMC password fails the boot stage naming node and BMC (exit 6); with --no-power the
    VMs stay off (the stage times out naming them, exit 7); without it the boot stage sets a
    one-time network boot and powers both VMs on through sushy-tools and virtualbmc once its
    boot service listens on the lab bridge, and both network-boot the test kernel (serial logs).
    Discovery of a real Talos node is out of reach here (no Talos image, no KVM): the boot
    stage is where a lab bootstrap ends on this host."""
    _prerequisites()
    kernel = debian_kernel()
    initrd = build_initramfs(tmp_path / "initramfs.xz")
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(with_catalog_versions(INVENTORY))
    lab_dir = tmp_path / "clusters" / CLUSTER / "lab"
    cli = Cli(tmp_path, inventory)
    boot = ("bootstrap", "--lab", "--only", "boot", "--kernel", str(kernel),
            "--initramfs", str(initrd))
    t0 = time.monotonic()
    try:
        cli("lab", "up", timeout=180)
        t_up = time.monotonic() - t0

        plan = cli("bootstrap", "--lab", "--plan", "--kernel", str(kernel), "--initramfs",
                   str(initrd)).stdout
        assert ("bios-vm: serve full-mode DHCP, TFTP and HTTP on the lab bridge eth0 (namespace "
                f"{NS})") in plan, plan
        assert ("power on through BMC redfish https://10.30.0.41:443, one-time PXE" in plan
                and "power on through BMC ipmi ipmi://10.30.0.42:623, one-time PXE" in plan), plan
        assert "given (--kernel/--initramfs)" in plan, plan
        no_power_plan = cli(*boot, "--plan", "--no-power").stdout
        assert no_power_plan.count("--no-power: power it on by hand") == 2, no_power_plan

        wrong = cli(*boot, "--timeout", "30", password="not-the-password", ok=False)
        assert wrong.returncode == 6, wrong.stderr[-2000:]
        assert ("node bios-vm: Redfish BMC https://10.30.0.41:443: authentication failed"
                in wrong.stderr), wrong.stderr[-2000:]
        assert "✘ [boot] boot failed" in wrong.stderr, wrong.stderr[-2000:]
        assert cli.power("status") == {"bios-vm": "off", "uefi-vm": "off"}

        t1 = time.monotonic()
        hands_off = cli(*boot, "--no-power", "--timeout", "6", ok=False)
        assert hands_off.returncode == 7, hands_off.stderr[-2000:]
        for node in ("bios-vm", "uefi-vm"):
            assert (f"{node}: waiting up to 6s for it to fetch kernel and initramfs from "
                    "10.20.0.2 on eth0 (power it on by hand)") in hands_off.stderr, hands_off.stderr
        assert "never seen: bios-vm, uefi-vm" in hands_off.stderr, hands_off.stderr[-2000:]
        assert cli.power("status") == {"bios-vm": "off", "uefi-vm": "off"}
        t_no_power = time.monotonic() - t1

        t2 = time.monotonic()
        run = cli(*boot, "--timeout", "150", timeout=200)
        t_boot = time.monotonic() - t2
        err = run.stderr
        for node, bmc in (("bios-vm", "redfish https://10.30.0.41:443"),
                          ("uefi-vm", "ipmi ipmi://10.30.0.42:623")):
            assert (f"{node}: waiting for the boot service on eth0 (10.20.0.2) before powering "
                    f"it through {bmc}") in err, err
            assert f"{node}: next boot from the network (once), set through {bmc}" in err, err
            assert f"{node}: powered on through {bmc}" in err, err
        assert "every node fetched its initramfs" in run.stdout + err
        status = json.loads(cli("lab", "status", "-o", "json").stdout)
        logs = {v["node"]: Path(v["console_log"]) for v in status["vms"]}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and any(_cmdline(p) is None for p in logs.values()):
            time.sleep(1)
        for node, log in logs.items():
            line = _cmdline(log)
            assert line is not None, (node, log.read_bytes()[-2000:] if log.exists() else None)
            assert f"cloudctl.test={node}" in line.split() and "talos.platform=metal" in line
        print(f"\nlab up {t_up:.1f}s; --no-power run {t_no_power:.1f}s; boot stage (power "
              f"through the BMCs to both initramfs fetched) {t_boot:.1f}s")
    finally:
        down = subprocess.run(cli.argv("lab", "down"), cwd=tmp_path, env=cli.env,
                              capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert _leftovers(lab_dir) == []
