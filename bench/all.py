"""Every benchmark of bench/, one after the other in one run, and the figures that matter.

    python bench/all.py [--quick] [--readme]

Runs (as subprocesses, each against its real peer where one exists): DHCP against Kea (and
dnsmasq) under perfdhcp, TFTP against dnsmasq with 100 lockstep clients, HTTP against nginx,
the 1,000-node render end to end, CLI start-up, an idle emulated 100-node rack and its
bootstrap, and PXE boot of BIOS and UEFI VMs against dnsmasq + nginx (needs root, libvirt,
QEMU). Prints each bench's summary lines; with --readme also writes them, dated, into
bench/README.md (the record of the last results). --quick shortens the long ones. Not a
pass/fail test: a bench that cannot run here (not root, a missing tool) says why and the run
goes on.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SETTLE = 15.0
"""Seconds of quiet between two benches."""
SUMMARY = re.compile(
    r"ratio|median|offered \d+/s:|p50|p99|end to end|% of a core|wall time|--help|"
    r"validate:|render|floor", re.IGNORECASE)


def benches(quick: bool) -> list[tuple[str, list[str], float]]:
    """(title, argv, timeout in seconds)."""
    period = "5" if quick else "10"
    rounds = "2" if quick else "3"
    return [
        ("DHCP: perfdhcp DORA against Kea and dnsmasq",
         ["dhcp.py", "--rates", "1000,4000,8000", "--period", period,
          "--servers", "cloudctl,kea,dnsmasq"], 900),
        ("TFTP: 100 clients x 1 MiB, lockstep, against dnsmasq",
         # about 2 s a round: seven rounds even in --quick, as two rounds' median is within
         # the machine's noise (+-5 %) of the ratio it reports
         ["tftp.py", "--rounds", "7"], 600),
        ("HTTP: 64 clients x 100 MiB against nginx",
         ["http_throughput.py", "--rounds", rounds], 900),
        ("render: 1,000 nodes, fresh process, to disk", ["render.py"], 600),
        ("CLI start-up", ["cli_startup.py"], 300),
        ("idle emulated 100-node rack, and its bootstrap", ["idle_rack.py"], 600),
        ("PXE boot in QEMU (BIOS, UEFI) against dnsmasq + nginx",
         ["lab.py", "--rounds", "1" if quick else "2"], 1800),
    ]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--readme", action="store_true", help="write bench/README.md")
    a = ap.parse_args()
    started = dt.datetime.now(dt.UTC)
    report: list[str] = []
    for i, (title, argv, timeout) in enumerate(benches(a.quick)):
        if i:
            # each bench starts on a settled machine: the one before may leave dirty pages
            # being written back and a busy load average (the render after the HTTP bench ran
            # 0.3 s slower without this pause)
            os.sync()
            time.sleep(SETTLE)
        print(f"== {title}", flush=True)
        t = time.monotonic()
        try:
            res = subprocess.run([sys.executable, str(HERE / argv[0]), *argv[1:]],
                                 capture_output=True, text=True, timeout=timeout,
                                 env={**os.environ, "PYTHONPATH": str(HERE.parent)})
            out = res.stdout + res.stderr
            lines = [ln.strip() for ln in out.splitlines() if SUMMARY.search(ln)]
            if res.returncode != 0:
                lines.append(f"(exit {res.returncode}: {out.strip().splitlines()[-1:]})")
        except subprocess.TimeoutExpired:
            lines = [f"(did not finish within {timeout:.0f} s)"]
        took = time.monotonic() - t
        for ln in lines:
            print(f"   {ln}")
        report.append(f"### {title}\n\n`python bench/{' '.join(argv)}` ({took:.0f} s)\n\n```\n"
                      + "\n".join(lines) + "\n```\n")
    if a.readme:
        cpus = os.cpu_count()
        text = (f"# Benchmark results\n\nLast run: {started:%Y-%m-%d %H:%M} UTC, "
                f"`python bench/all.py{' --quick' if a.quick else ''}` on this project's "
                f"build machine ({cpus} CPUs), every figure against its peer in the same "
                "run. Re-run it after a change that may affect speed and commit the result.\n\n"
                + "\n".join(report))
        (HERE / "README.md").write_text(text)
        print(f"wrote {HERE / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
