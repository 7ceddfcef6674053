"""HTTP throughput: cloudctl's HttpServer against nginx on loopback, same clients, same run.

C concurrent curl clients each download the same file (default 64 x 100 MiB, i.e. 6.7 GB per
round) from each server in turn; aggregate throughput is compared. Both servers serve the file
from the page cache with sendfile: nginx (`sendfile on`, `worker_processes auto`, access log
off) and cloudctl (one asyncio process, ``loop.sendfile``). Runs as any user:

    python bench/http_throughput.py                  # 64 x 100 MiB, 3 rounds
    python bench/http_throughput.py --size 50000000 --rounds 5
    python bench/http_throughput.py --nginx-workers 1  # nginx with one worker, like cloudctl
    python bench/http_throughput.py --requests 2000  # small requests instead of big bodies

Prints one line per round and the ratio of median throughputs (cloudctl / nginx; >= 1.0 is
the target).

``--requests N`` measures request handling instead of body copying: each client fetches the
small per-MAC iPXE script N times over one keep-alive connection (curl URL globbing), so the
cost of parsing, routing and building response heads dominates; the rate is in requests/s.
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

MAC = "52:54:00:10:00:11"
PATH = "/boot/52-54-00-10-00-11/kernel"
SCRIPT_PATH = "/ipxe/52-54-00-10-00-11.ipxe"
SCRIPT = b"#!ipxe\n"


def serve_ours(asset: str, port: int) -> None:
    """Child-process entry: run cloudctl's HTTP server until SIGTERM."""
    here = Path(__file__).resolve().parent
    # this file is named http.py: keep it from shadowing the standard library's http package
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.path.insert(0, str(here.parent))
    from cloudctl.boot.http import HttpServer

    async def main() -> None:
        server = HttpServer(
            "127.0.0.1",
            port,
            tftp_root=Path(asset).parent,
            assets={"kernel": Path(asset)},
            scripts=lambda mac: SCRIPT if mac == MAC else None,
        )
        await server.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        await stop.wait()
        await server.stop()

    asyncio.run(main())


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def run_clients(url: str, n: int, size: int) -> tuple[float, int]:
    """n curl clients at once; return (seconds until all done, clients with a wrong size)."""
    curl = shutil.which("curl")
    assert curl
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [curl, "-s", "-o", "/dev/null", "-w", "%{size_download}", url],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    outs = [p.communicate()[0] for p in procs]
    elapsed = time.perf_counter() - t0
    bad = sum(1 for o in outs if o.strip() != str(size))
    return elapsed, bad


def run_small_clients(url: str, n: int, per_client: int) -> tuple[float, int]:
    """n curl clients at once, each GETting ``url`` per_client times on one keep-alive
    connection; return (seconds until all done, clients with a response that was not 200)."""
    curl = shutil.which("curl")
    assert curl
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [curl, "-s", "-w", "\n%{http_code}\n", f"{url}?[1-{per_client}]"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    outs = [p.communicate()[0] for p in procs]
    elapsed = time.perf_counter() - t0
    bad = sum(1 for o in outs if o.split().count("200") != per_client)
    return elapsed, bad


NGINX_CONF = """
worker_processes {workers};
daemon off;
pid {base}/nginx.pid;
error_log {base}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 30;
    client_body_temp_path {base}/tmp;
    proxy_temp_path {base}/tmp;
    fastcgi_temp_path {base}/tmp;
    uwsgi_temp_path {base}/tmp;
    scgi_temp_path {base}/tmp;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
    }}
}}
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--size", type=int, default=100 << 20, help="file size in bytes")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--nginx-workers", default="auto")
    ap.add_argument(
        "--requests",
        type=int,
        default=0,
        metavar="N",
        help="small-request mode: N keep-alive GETs of the iPXE script per client",
    )
    ap.add_argument("--serve-ours", nargs=2, metavar=("FILE", "PORT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve_ours:
        serve_ours(a.serve_ours[0], int(a.serve_ours[1]))
        return 0
    for tool in ("curl", "nginx"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            print(f"needs {tool}", file=sys.stderr)
            return 2
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"

    # /dev/shm keeps the file in memory for both servers (both read it from the page cache)
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="bench-http-", dir=shm) as tmp:
        base = Path(tmp)
        root = base / "root" / "boot" / "52-54-00-10-00-11"
        root.mkdir(parents=True)
        (base / "tmp").mkdir()
        asset = root / "kernel"
        with asset.open("wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(a.size // len(chunk)):
                f.write(chunk)
            f.write(chunk[: a.size % len(chunk)])
        for d in (base, base / "root", base / "root" / "boot", root):
            os.chmod(d, 0o755)
        os.chmod(asset, 0o644)
        script_dir = base / "root" / "ipxe"
        script_dir.mkdir()
        (script_dir / Path(SCRIPT_PATH).name).write_bytes(SCRIPT)
        for p in (script_dir, script_dir / Path(SCRIPT_PATH).name):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)

        port_ours, port_nginx = free_tcp_port(), free_tcp_port()
        conf = base / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                workers=a.nginx_workers, base=base, port=port_nginx, root=base / "root"
            )
        )
        ours = subprocess.Popen(
            [sys.executable, __file__, "--serve-ours", str(asset), str(port_ours)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert ours.stdout is not None and ours.stdout.readline().strip() == "ready"
        ngx = subprocess.Popen([nginx, "-c", str(conf), "-p", str(base)])
        try:
            wait_port(port_nginx)
            path, unit, scale = PATH, "GB/s", a.clients * a.size / 1e9
            if a.requests:
                path, unit, scale = SCRIPT_PATH, "kreq/s", a.clients * a.requests / 1e3
                what = f"{a.requests} keep-alive requests for a {len(SCRIPT)}-byte script"
            else:
                what = f"{a.size} bytes"
            print(
                f"{a.clients} clients x {what}, nginx worker_processes "
                f"{a.nginx_workers}, {os.cpu_count()} CPUs"
            )
            urls = {
                "cloudctl": f"http://127.0.0.1:{port_ours}{path}",
                "nginx": f"http://127.0.0.1:{port_nginx}{path}",
            }

            def run(url: str, clients: int) -> tuple[float, int]:
                if a.requests:
                    return run_small_clients(url, clients, a.requests)
                return run_clients(url, clients, a.size)

            for url in urls.values():  # warm-up
                run(url, 2)
            rates: dict[str, list[float]] = {"cloudctl": [], "nginx": []}
            for r in range(a.rounds):
                order = ["cloudctl", "nginx"] if r % 2 == 0 else ["nginx", "cloudctl"]
                for label in order:
                    t, bad = run(urls[label], a.clients)
                    rate = scale / t
                    rates[label].append(rate)
                    print(f"round {r + 1} {label:8s} {t:7.3f} s  {rate:6.2f} {unit}  bad={bad}")
            ours_r = statistics.median(rates["cloudctl"])
            peer_r = statistics.median(rates["nginx"])
            print(f"median cloudctl {ours_r:.2f} {unit}, nginx {peer_r:.2f} {unit}")
            print(f"ratio cloudctl/nginx throughput = {ours_r / peer_r:.2f} (target >= 1.0)")
        finally:
            ours.send_signal(signal.SIGTERM)
            ngx.send_signal(signal.SIGQUIT)
            ours.wait(10)
            ngx.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
