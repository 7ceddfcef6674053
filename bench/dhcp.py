"""DHCP exchanges/s and loss: cloudctl vs Kea (kea-dhcp4, memfile) vs dnsmasq, with perfdhcp.

Run by hand as root:  python bench/dhcp.py [--rates 500,1000,2000,4000] [--period 10]

Each server runs alone in a network namespace joined to perfdhcp's namespace by one veth pair
(tests/integration/netns.py ``veth_pair``); perfdhcp (Debian kea-admin, ``-g multi``) has an
address on its interface and uses ``-B`` (broadcast replies), doing full DORA
exchanges from ``--clients`` simulated MACs at each offered rate for ``--period`` seconds.
cloudctl serves full mode with a dynamic range (perfdhcp's MACs are not in any inventory).
Prints a table and, per rate, the ratio of cloudctl's exchanges/s to Kea's, dnsmasq's and to
cloudctl with scapy's codec (``cloudctl-scapy``). exchanges/s = ACKs received / period.
Then one more run per server at ``--latency-rate`` (default 1,000/s) with perfdhcp's ``-x t``
per-exchange timestamps: p50/p99/max DISCOVER->OFFER delay of the answered DISCOVERs (perfdhcp
itself only prints min/avg/max/std-dev), and cloudctl's ratio to Kea's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT))

from netns import Host, LoopInNetns, veth_pair, with_catalog_versions  # noqa: E402

from cloudctl.boot.dhcp.config import dhcp_config_from_inventory  # noqa: E402
from cloudctl.boot.dhcp.transport import DhcpServer  # noqa: E402
from cloudctl.inventory import parse_inventory  # noqa: E402

INVENTORY = """
cluster: {name: bench, talosVersion: TALOS_VERSION, kubernetesVersion: K8S_VERSION, vip: 10.20.0.10}
network:
  interface: eth0
  bootServer: 10.20.0.2
  subnet: 10.20.0.0/16
  gateway: 10.20.0.1
  dns: [10.20.0.1]
  dhcp: {mode: full, leaseTime: 3600, range: {start: 10.20.16.0, end: 10.20.63.255}}
platform: {metallb: {enabled: false}}
nodes:
  - {name: cp1, role: controlplane, macs: ["52:54:00:10:00:11"], ip: 10.20.0.11,
     installDisk: /dev/sda}
"""

KEA_CONF = {
    "Dhcp4": {
        "interfaces-config": {"interfaces": ["eth0"], "dhcp-socket-type": "raw"},
        "lease-database": {"type": "memfile", "persist": False, "lfc-interval": 0},
        "valid-lifetime": 3600,
        "subnet4": [
            {
                "id": 1,
                "subnet": "10.20.0.0/16",
                "pools": [{"pool": "10.20.16.0 - 10.20.63.255"}],
                "option-data": [
                    {"name": "routers", "data": "10.20.0.1"},
                    {"name": "domain-name-servers", "data": "10.20.0.1"},
                ],
            }
        ],
        "loggers": [
            {"name": "kea-dhcp4", "severity": "WARN", "output_options": [{"output": "stderr"}]}
        ],
    }
}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def offer_delays(out: str) -> list[float]:
    """DISCOVER->OFFER delays in ms from perfdhcp's ``-x t`` timestamp dump (answered only)."""
    section = out.split("***Timestamps for packets: DISCOVER-OFFER***", 1)
    if len(section) < 2:
        return []
    body = section[1].split("***", 1)[0]
    return [
        (float(rcvd) - float(sent)) * 1000
        for sent, rcvd in re.findall(r"sent / received: ([\d.]+) / ([\d.]+)", body)
    ]


def perfdhcp(
    client: Host, rate: int, period: int, clients: int, *, timers: bool = False
) -> dict[str, float]:
    """One perfdhcp DORA run; ``timers`` adds p50/p99/max DISCOVER->OFFER delay (ms) from the
    per-exchange timestamps perfdhcp prints with ``-x t`` (sent and received as perfdhcp saw
    them, so its own user-space latency is included, for every server alike)."""
    out = client.run(
        [
            "perfdhcp",
            "-4",
            "-l",
            "eth0",
            "-B",
            "-r",
            str(rate),
            "-R",
            str(clients),
            "-p",
            str(period),
            "-W",
            "2000000",
            "-s",
            "42",
            *(["-x", "t"] if timers else []),
            "10.20.0.2",
        ],
        check=False,
        timeout=period + 60,
    )
    # perfdhcp prints one block per exchange type: DISCOVER-OFFER and REQUEST-ACK
    sent = [int(x) for x in re.findall(r"sent packets: (\d+)", out)]
    recv = [int(x) for x in re.findall(r"received packets: (\d+)", out)]
    rate_m = re.search(r"Rate: ([\d.]+) 4-way exchanges/second", out)
    if len(sent) < 2 or len(recv) < 2:
        raise RuntimeError(f"unexpected perfdhcp output:\n{out}")
    do_loss = 1 - recv[0] / sent[0] if sent[0] else 1.0
    ra_loss = 1 - recv[1] / sent[1] if sent[1] else 1.0
    acked = recv[1]
    delays = offer_delays(out) if timers else []
    return {
        "p50_ms": percentile(delays, 50),
        "p99_ms": percentile(delays, 99),
        "max_ms": max(delays) if delays else float("nan"),
        "timed": len(delays),
        "offered_rate": rate,
        # perfdhcp's own "Rate" divides by the run time including its exit wait; use the period
        "exchanges_per_s": acked / period,
        "perfdhcp_rate": float(rate_m.group(1)) if rate_m else 0.0,
        "acks": acked,
        "discovers": sent[0],
        "loss": 1 - acked / sent[0] if sent[0] else 1.0,
        "do_loss": do_loss,
        "ra_loss": ra_loss,
    }


def plan(args) -> list[tuple[int, bool]]:
    """(offered rate, timed) per perfdhcp run: the throughput rates, then the latency run."""
    runs = [(rate, False) for rate in args.rates]
    if args.latency_rate:
        runs.append((args.latency_rate, True))
    return runs


def run_cloudctl(srv: Host, cli: Host, args, wire: str = "lean") -> list[dict[str, float]]:
    inv = parse_inventory(with_catalog_versions(INVENTORY), "bench.yaml").inventory
    results = []
    for rate, timers in plan(args):
        cfg = dhcp_config_from_inventory(inv)
        with LoopInNetns(srv.ns) as loop:
            server = DhcpServer(cfg, wire=wire)  # type: ignore[arg-type]
            loop.call(server.start())
            try:
                results.append(perfdhcp(cli, rate, args.period, args.clients, timers=timers))
            finally:
                loop.call(server.stop())
    return results


def run_process(argv_for_rate, srv: Host, cli: Host, args) -> list[dict[str, float]]:
    results = []
    for rate, timers in plan(args):
        with tempfile.TemporaryFile() as log:
            proc = srv.popen(argv_for_rate(), stdout=log, stderr=subprocess.STDOUT)
            time.sleep(1.5)
            try:
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(log.read().decode(errors="replace"))
                results.append(perfdhcp(cli, rate, args.period, args.clients, timers=timers))
            finally:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--rates", default="500,1000,2000,3000,4000", type=lambda s: [int(x) for x in s.split(",")]
    )
    ap.add_argument("--period", type=int, default=10)
    ap.add_argument("--clients", type=int, default=5000)
    ap.add_argument(
        "--latency-rate",
        type=int,
        default=1000,
        help="offered rate of the DISCOVER->OFFER latency run (p50/p99); 0 skips it",
    )
    ap.add_argument(
        "--servers",
        default="cloudctl,cloudctl-scapy,kea,dnsmasq",
        help="cloudctl-scapy: cloudctl with scapy's codec on the hot path",
    )
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    for tool in ("perfdhcp",):
        if shutil.which(tool) is None:
            print(f"{tool} not installed (Debian kea-admin)", file=sys.stderr)
            return 2
    tmp = Path(tempfile.mkdtemp(prefix="cloudctl-bench-dhcp-"))
    kea_conf = tmp / "kea.json"
    kea_conf.write_text(json.dumps(KEA_CONF))
    Path("/run/kea").mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict[str, float]]] = {}
    with veth_pair("bd", "10.20.0.2/16", "10.20.0.250/16") as (srv, cli):
        for name in args.servers.split(","):
            t0 = time.monotonic()
            if name == "cloudctl":
                results[name] = run_cloudctl(srv, cli, args)
            elif name == "cloudctl-scapy":
                results[name] = run_cloudctl(srv, cli, args, wire="scapy")
            elif name == "kea":
                if shutil.which("kea-dhcp4") is None:
                    print("kea-dhcp4 not installed (Debian kea-dhcp4-server); skipped")
                    continue
                results[name] = run_process(
                    lambda: ["kea-dhcp4", "-c", str(kea_conf)], srv, cli, args
                )
            elif name == "dnsmasq":
                if shutil.which("dnsmasq") is None:
                    print("dnsmasq not installed; skipped")
                    continue

                def dnsmasq_argv() -> list[str]:
                    lease = tmp / f"dnsmasq-{time.monotonic_ns()}.leases"
                    return [
                        "dnsmasq",
                        "--no-daemon",
                        "--port=0",
                        "--interface=eth0",
                        "--bind-interfaces",
                        "--conf-file=/dev/null",
                        "--no-ping",
                        "--dhcp-range=10.20.16.0,10.20.63.255,255.255.0.0,1h",
                        "--dhcp-lease-max=100000",
                        f"--dhcp-leasefile={lease}",
                        "--dhcp-authoritative",
                    ]

                results[name] = run_process(dnsmasq_argv, srv, cli, args)
            print(f"{name}: done in {time.monotonic() - t0:.0f}s", flush=True)
    print()
    print(
        f"{'server':14} {'offered/s':>10} {'exch/s':>9} {'loss %':>8} {'DO loss %':>10} "
        f"{'RA loss %':>10}"
    )
    n = len(args.rates)
    for name, rows in results.items():
        for r in rows[:n]:
            print(
                f"{name:14} {r['offered_rate']:>10} {r['exchanges_per_s']:>9.0f} "
                f"{100 * r['loss']:>8.2f} {100 * r['do_loss']:>10.2f} "
                f"{100 * r['ra_loss']:>10.2f}"
            )
    if args.latency_rate:
        print()
        print(f"DISCOVER->OFFER delay at {args.latency_rate}/s offered (perfdhcp -x t timestamps)")
        print(
            f"{'server':14} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'timed':>7} "
            f"{'DO loss %':>10}"
        )
        for name, rows in results.items():
            r = rows[n]
            print(
                f"{name:14} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['max_ms']:>8.3f} "
                f"{r['timed']:>7} {100 * r['do_loss']:>10.2f}"
            )
    if "cloudctl" in results:
        print()
        ours_rows = results["cloudctl"]
        for i, rate in enumerate(args.rates):
            ours = ours_rows[i]["exchanges_per_s"]
            parts = [f"offered {rate}/s: cloudctl {ours:.0f}/s"]
            for peer in ("kea", "dnsmasq", "cloudctl-scapy"):
                if peer in results and results[peer][i]["exchanges_per_s"] > 0:
                    parts.append(f"{peer} ratio {ours / results[peer][i]['exchanges_per_s']:.2f}")
            print(", ".join(parts))
        if args.latency_rate and "kea" in results:
            ours_l, kea_l = ours_rows[n], results["kea"][n]
            print(
                f"offer delay at {args.latency_rate}/s: cloudctl p50 {ours_l['p50_ms']:.3f} ms "
                f"p99 {ours_l['p99_ms']:.3f} ms; ratio to kea p50 "
                f"{ours_l['p50_ms'] / kea_l['p50_ms']:.2f}, p99 "
                f"{ours_l['p99_ms'] / kea_l['p99_ms']:.2f} (goal p99 <= 5 ms)"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
