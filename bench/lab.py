"""Lab boot time: cloudctl's boot service against dnsmasq + nginx, same VMs, same files, one run.

Builds a two-VM lab (one BIOS on Redfish, one UEFI on IPMI; ``cloudctl lab up``), then per
round powers both VMs on through their BMC emulators (one-time network boot, then on) and
measures the time from power-on until both kernels printed their command line on the serial
console (the test initramfs prints /proc/cmdline, then powers off). Rounds alternate between
the two servers (ABBA), both on the lab bridge:

- cloudctl: ``cloudctl pxe serve --kernel K --initramfs I`` (DHCP full mode, TFTP, HTTP);
- peer: dnsmasq (DHCP with the inventory's reservations, TFTP with the same iPXE binaries)
  and nginx (the same per-MAC iPXE scripts as cloudctl renders, the same kernel and initramfs).

Run as root (needs what tests/lab needs; the kernel is cached by the QEMU tests):

    python bench/lab.py [--rounds 2]

Prints each round (per VM too) and the ratio of median times (cloudctl / dnsmasq+nginx;
goal <= 0.6 since the boot service answers IPv6 router solicitations).
Not a pass/fail test. ``lab down`` runs at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

PASSWORD = "bench-bmc-pw"
CLUSTER = "labbench"
NS = f"cloudctl-lab-{CLUSTER}"
PEER_HTTP = 8081
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
lab: {{memoryMib: 512, cpus: 1, systemDiskGib: 2, dataDiskGib: 1}}
nodes:
  - name: bios-vm
    role: controlplane
    macs: ["52:54:00:10:00:51"]
    ip: 10.20.0.51
    installDisk: /dev/vda
    firmware: bios
    bmc: {{type: redfish, address: 10.30.0.51, username: admin, passwordRef: env:LABBENCH_PW}}
  - name: uefi-vm
    role: worker
    macs: ["52:54:00:10:00:52"]
    ip: 10.20.0.52
    installDisk: /dev/vda
    firmware: uefi
    bmc: {{type: ipmi, address: 10.30.0.52, username: admin, passwordRef: env:LABBENCH_PW}}
"""

DNSMASQ = """\
port=0
interface={iface}
bind-interfaces
dhcp-range={net},static,10m
{hosts}
dhcp-userclass=set:ipxe,iPXE
dhcp-match=set:efi64,option:client-arch,7
dhcp-match=set:efi64,option:client-arch,9
dhcp-boot=tag:ipxe,http://{server}:{port}/ipxe/boot.ipxe
dhcp-boot=tag:!ipxe,tag:efi64,snponly.efi
dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe
enable-tftp
tftp-root={tftp}
dhcp-leasefile={base}/leases
pid-file={base}/dnsmasq.pid
"""

NGINX = """\
worker_processes 1;
daemon off;
pid {base}/nginx.pid;
error_log {base}/nginx-error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    default_type application/octet-stream;
    client_body_temp_path {base}/tmp;
    proxy_temp_path {base}/tmp;
    fastcgi_temp_path {base}/tmp;
    uwsgi_temp_path {base}/tmp;
    scgi_temp_path {base}/tmp;
    server {{
        listen {server}:{port};
        root {root};
    }}
}}
"""


def _booted(log: Path) -> bool:
    try:
        data = log.read_bytes()
    except OSError:
        return False
    return b"CLOUDCTL-CMDLINE: " in data


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from cloudctl.cli import main; main()", *args]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2, help="rounds per server (ABBA order)")
    ap.add_argument("--timeout", type=float, default=240.0, help="per boot, seconds")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (a lab: network namespace, libvirtd, DHCP on the lab bridge)",
              file=sys.stderr)
        return 2
    for tool in ("dnsmasq", "nginx", "libvirtd", "qemu-system-x86_64"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            print(f"{tool} not installed", file=sys.stderr)
            return 2

    from netns import with_catalog_versions
    from test_qemu_boot import build_initramfs, debian_kernel

    from cloudctl.boot.assets import find_ipxe_binaries, stage_tftp_root
    from cloudctl.boot.ipxe import scripts_by_mac
    from cloudctl.inventory import parse_inventory
    from cloudctl.lab import lab_down, lab_up, netns
    from cloudctl.power import run_power

    os.environ["LABBENCH_PW"] = PASSWORD
    inv = parse_inventory(with_catalog_versions(INVENTORY), "bench.yaml").inventory
    kernel = debian_kernel()
    with tempfile.TemporaryDirectory(prefix="cloudctl-labbench-") as tmp:
        base = Path(tmp)
        base.chmod(0o755)  # nginx workers (www-data) read the files
        initrd = build_initramfs(base / "initramfs.xz")
        (base / "inventory.yaml").write_text(with_catalog_versions(INVENTORY))
        lab_dir = base / "lab"
        # the peer's files: the same iPXE binaries, scripts (as cloudctl renders them, with the
        # peer's URL), kernel and initramfs
        tftp = base / "tftp"
        tftp.mkdir()
        stage_tftp_root(find_ipxe_binaries(None), tftp)
        www = base / "www"
        server = str(inv.network.boot_server)
        url = f"http://{server}:{PEER_HTTP}"
        (www / "ipxe").mkdir(parents=True)
        (www / "ipxe" / "boot.ipxe").write_text(f"#!ipxe\nchain {url}/ipxe/${{mac:hexhyp}}\n")
        for mac, script in scripts_by_mac(inv, base_url=url).items():
            dashed = mac.replace(":", "-")
            (www / "ipxe" / dashed).write_bytes(script)
            (www / "boot" / dashed).mkdir(parents=True)
            shutil.copy(kernel, www / "boot" / dashed / "kernel")
            shutil.copy(initrd, www / "boot" / dashed / "initramfs.xz")
        (base / "tmp").mkdir()
        hosts = "\n".join(f"dhcp-host={n.primary_mac},{n.ip}" for n in inv.nodes)
        (base / "dnsmasq.conf").write_text(DNSMASQ.format(
            iface=inv.network.interface, net=inv.network.subnet.network_address, hosts=hosts,
            server=server, port=PEER_HTTP, tftp=tftp, base=base))
        (base / "nginx.conf").write_text(NGINX.format(base=base, server=server, port=PEER_HTTP,
                                                      root=www))
        procs: list[subprocess.Popen[bytes]] = []
        t0 = time.monotonic()
        try:
            res = lab_up(inv, lab_dir, notify=lambda m: print(f"  {m}"))
            print(f"lab up in {time.monotonic() - t0:.1f}s ({res.spec.accel})")
            spec = res.spec
            times: dict[str, list[float]] = {"cloudctl": [], "dnsmasq+nginx": []}
            per_vm: dict[tuple[str, str], list[float]] = {}
            order = []
            for r in range(a.rounds):
                order += ["cloudctl", "dnsmasq+nginx"] if r % 2 == 0 else [
                    "dnsmasq+nginx", "cloudctl"]
            for i, who in enumerate(order, 1):
                procs = []
                if who == "cloudctl":
                    procs.append(subprocess.Popen(
                        ["ip", "netns", "exec", NS, *_cli(
                            "pxe", "serve", "-i", str(base / "inventory.yaml"), "--kernel",
                            str(kernel), "--initramfs", str(initrd), "--timeout",
                            str(a.timeout), "-o", "json")],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                else:
                    procs.append(subprocess.Popen(
                        ["ip", "netns", "exec", NS, "dnsmasq", "--no-daemon", "--conf-file="
                         + str(base / "dnsmasq.conf")],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                    procs.append(subprocess.Popen(
                        ["ip", "netns", "exec", NS, shutil.which("nginx") or "/usr/sbin/nginx",
                         "-c", str(base / "nginx.conf"), "-p", str(base)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                time.sleep(2.0)  # let the servers bind (the same head start for both)
                for vm in spec.vms:  # the domains are off: start each console log afresh
                    vm.console_log.write_bytes(b"")
                with netns.entered(NS):
                    run_power(inv, "pxe-once", ca_cert=spec.ca_cert)
                    started = time.monotonic()
                    run_power(inv, "on", ca_cert=spec.ca_cert)
                deadline = started + a.timeout
                pending = {vm.node: vm.console_log for vm in spec.vms}
                booted: dict[str, float] = {}
                while pending and time.monotonic() < deadline:
                    for node, log in list(pending.items()):
                        if _booted(log):
                            booted[node] = time.monotonic() - started
                            del pending[node]
                    time.sleep(0.2)
                elapsed = time.monotonic() - started
                for p in procs:
                    if p.poll() is None:
                        p.terminate()
                    p.wait(10)
                if pending:
                    print(f"round {i} {who}: {', '.join(pending)} did not boot in "
                          f"{a.timeout:.0f}s", file=sys.stderr)
                    return 1
                times[who].append(elapsed)
                for node, t in booted.items():
                    per_vm.setdefault((who, node), []).append(t)
                each = ", ".join(f"{n} {t:.1f}s" for n, t in sorted(booted.items()))
                print(f"round {i} {who}: both kernels booted {elapsed:.1f}s after power-on "
                      f"({each})")
                with netns.entered(NS):  # the guests power themselves off; wait for it
                    deadline = time.monotonic() + 60
                    while True:
                        states = {r.state for r in run_power(inv, "status", ca_cert=spec.ca_cert)}
                        if states == {"off"}:
                            break
                        if time.monotonic() > deadline:
                            run_power(inv, "off", ca_cert=spec.ca_cert)
                            break
                        time.sleep(1)
            ours = statistics.median(times["cloudctl"])
            peer = statistics.median(times["dnsmasq+nginx"])
            print(json.dumps({k: [round(x, 2) for x in v] for k, v in times.items()}))
            for vm in spec.vms:
                a_t = statistics.median(per_vm.get(("cloudctl", vm.node), [math.nan]))
                b_t = statistics.median(per_vm.get(("dnsmasq+nginx", vm.node), [math.nan]))
                print(f"{vm.node} ({vm.firmware}): cloudctl {a_t:.1f}s, dnsmasq+nginx "
                      f"{b_t:.1f}s: ratio {a_t / b_t:.3f}")
            print(f"median cloudctl {ours:.1f}s, dnsmasq+nginx {peer:.1f}s: ratio "
                  f"{ours / peer:.3f} (goal <= 0.6: cloudctl answers IPv6 router "
                  "solicitations, so iPXE does not wait for IPv6 autoconfiguration)")
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop this
            for p in procs:
                if p.poll() is None:
                    p.terminate()
                    p.wait(10)
            lab_down(inv, lab_dir, notify=lambda m: None)
            print("lab down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
