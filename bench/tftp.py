"""TFTP throughput: cloudctl's TftpServer against dnsmasq's TFTP, same clients, same run.

N concurrent atftp clients each fetch the same file (default 100 x 1 MiB) from each server in
turn; the wall time until the last client finished is compared. Both servers run as their own
process on loopback (dnsmasq on 127.0.0.3:69, cloudctl on 127.0.0.1:<free port>), and both
with no transfer limit below N. Run as root (dnsmasq binds port 69):

    python bench/tftp.py                 # 100 clients x 1 MiB, 3 rounds each, blksize 1428
    python bench/tftp.py --blksize 512 --rounds 5
    python bench/tftp.py --windowsize 8  # RFC 7440 (dnsmasq ignores it: lockstep there)

Prints one line per round and the ratio of median times (cloudctl / dnsmasq; <= 1.0 means
cloudctl is at least as fast).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DNSMASQ_ADDR = "127.0.0.3"


def serve_ours(root: str, port: int) -> None:
    """Child-process entry: run cloudctl's TFTP server until SIGTERM."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from cloudctl.boot.tftp import TftpServer

    async def main() -> None:
        server = TftpServer(Path(root), "127.0.0.1", port)
        await server.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        await stop.wait()
        await server.stop()

    asyncio.run(main())


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_clients(
    host: str, port: int, n: int, name: str, out: Path, options: list[str]
) -> tuple[float, int]:
    """Start n atftp clients at once; return (seconds until all done, number that failed)."""
    atftp = shutil.which("atftp")
    assert atftp
    procs = []
    t0 = time.perf_counter()
    for i in range(n):
        args = [atftp]
        for opt in options:
            args += ["--option", opt]
        args += ["-g", "-r", name, "-l", str(out / f"c{i}"), host, str(port)]
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    failed = sum(1 for p in procs if p.wait() != 0)
    elapsed = time.perf_counter() - t0
    return elapsed, failed


def verify(out: Path, n: int, size: int) -> int:
    bad = sum(1 for i in range(n) if (out / f"c{i}").stat().st_size != size)
    for i in range(n):
        (out / f"c{i}").unlink()
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--size", type=int, default=1 << 20, help="file size in bytes")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--blksize", type=int, default=1428)
    ap.add_argument("--windowsize", type=int, default=0, help="0: not requested")
    ap.add_argument("--serve-ours", nargs=2, metavar=("ROOT", "PORT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve_ours:
        serve_ours(a.serve_ours[0], int(a.serve_ours[1]))
        return 0
    for tool in ("atftp", "dnsmasq"):
        if shutil.which(tool) is None:
            print(f"needs {tool}", file=sys.stderr)
            return 2
    if os.geteuid() != 0:
        print("needs root (dnsmasq's TFTP listens on port 69)", file=sys.stderr)
        return 2

    options = [f"blksize {a.blksize}"]
    if a.windowsize:
        options.append(f"windowsize {a.windowsize}")
    with tempfile.TemporaryDirectory(prefix="bench-tftp-") as tmp:
        base = Path(tmp)
        root = base / "root"
        root.mkdir()
        os.chmod(base, 0o755)
        os.chmod(root, 0o755)
        (root / "file.bin").write_bytes(os.urandom(a.size))
        os.chmod(root / "file.bin", 0o644)
        out = base / "out"
        out.mkdir()

        port = free_udp_port()
        ours = subprocess.Popen(
            [sys.executable, __file__, "--serve-ours", str(root), str(port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert ours.stdout is not None and ours.stdout.readline().strip() == "ready"
        dnsmasq = subprocess.Popen(
            [
                "dnsmasq",
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--pid-file=",
                "--port=0",
                "--bind-interfaces",
                f"--listen-address={DNSMASQ_ADDR}",
                "--interface=lo",
                "--enable-tftp",
                f"--tftp-root={root}",
                f"--tftp-max={a.clients * 2}",
                "--quiet-tftp",
                "--user=root",
                "--log-facility=-",
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.5)
        if dnsmasq.poll() is not None:
            print(
                "dnsmasq failed:", dnsmasq.stderr.read() if dnsmasq.stderr else "", file=sys.stderr
            )
            ours.terminate()
            return 2
        try:
            print(
                f"{a.clients} clients x {a.size} bytes, atftp options {options}, "
                f"{os.cpu_count()} CPUs"
            )
            times: dict[str, list[float]] = {"cloudctl": [], "dnsmasq": []}
            # warm-up (page cache, process start)
            run_clients("127.0.0.1", port, 4, "file.bin", out, options)
            verify(out, 4, a.size)
            for r in range(a.rounds):
                order = [("cloudctl", "127.0.0.1", port), ("dnsmasq", DNSMASQ_ADDR, 69)]
                if r % 2:
                    order.reverse()  # alternate who goes first
                for label, host, p in order:
                    t, failed = run_clients(host, p, a.clients, "file.bin", out, options)
                    bad = verify(out, a.clients, a.size)
                    times[label].append(t)
                    mb = a.clients * a.size / t / 1e6
                    print(
                        f"round {r + 1} {label:8s} {t:7.3f} s  {mb:7.1f} MB/s  "
                        f"failed={failed} wrong_size={bad}"
                    )
            ours_t = statistics.median(times["cloudctl"])
            peer_t = statistics.median(times["dnsmasq"])
            print(f"median cloudctl {ours_t:.3f} s, dnsmasq {peer_t:.3f} s")
            print(f"ratio cloudctl/dnsmasq time = {ours_t / peer_t:.2f} (target <= 1.0)")
        finally:
            ours.send_signal(signal.SIGTERM)
            dnsmasq.terminate()
            ours.wait(5)
            dnsmasq.wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
