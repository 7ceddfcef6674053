"""TFTP and HTTP boot servers against real clients on loopback: tftp-hpa, atftp, curl.

Needs the Debian packages tftp-hpa, atftp and curl (skipped with the reason when absent). Runs as
any user: the servers bind unprivileged loopback ports.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudctl.boot.events import BootEvent
from cloudctl.boot.http import HttpServer
from cloudctl.boot.tftp import TftpServer

KNOWN = "52:54:00:10:00:11"
IPXE = Path("/usr/lib/ipxe")


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"needs {tool} (Debian package providing it) on PATH")
    return path


class Servers:
    """TFTP + HTTP servers on their own event loop in a background thread."""

    def __init__(self, root: Path, kernel: Path, initrd: Path) -> None:
        self.events: list[BootEvent] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.tftp = TftpServer(root, "127.0.0.1", 0, on_event=self.events.append)
        self.http = HttpServer(
            "127.0.0.1",
            0,
            tftp_root=root,
            assets={"kernel": kernel, "initramfs.xz": initrd},
            scripts=lambda mac: b"#!ipxe\necho known\n" if mac == KNOWN else None,
            on_event=self.events.append,
        )

    def _run(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)  # type: ignore[arg-type]

    def __enter__(self) -> Servers:
        self.thread.start()
        self._run(self.tftp.start())
        self._run(self.http.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self._run(self.tftp.stop())
        self._run(self.http.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    def of_kind(self, kind: str) -> list[BootEvent]:
        return [e for e in list(self.events) if e.kind == kind]

    def wait_for(self, kind: str, count: int = 1, timeout: float = 10) -> list[BootEvent]:
        """The events of ``kind`` once there are at least ``count``. The servers record a
        transfer when it ends on their side (TFTP: the client's last ACK; HTTP: the last write),
        which can be a moment after the client has exited: wait for it instead of racing it."""
        deadline = time.monotonic() + timeout
        while len(found := self.of_kind(kind)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} {kind} event(s) expected within {timeout} s, got "
                                     f"{[(e.kind, e.path) for e in self.events]}")
            time.sleep(0.02)
        return found


@pytest.fixture()
def servers(tmp_path: Path) -> Iterator[Servers]:
    root = tmp_path / "tftp"
    root.mkdir()
    for name in ("undionly.kpxe", "snponly.efi"):
        if (IPXE / name).is_file():
            shutil.copyfile(IPXE / name, root / name)
        else:  # same role, synthetic content, when Debian's ipxe is absent
            (root / name).write_bytes(os.urandom(150_000))
    (root / "big.bin").write_bytes(os.urandom(3_000_000))
    (tmp_path / "secret").write_text("must never be served")
    os.symlink(tmp_path / "secret", root / "link-out")
    kernel = tmp_path / "kernel"
    kernel.write_bytes(os.urandom(2_000_000))
    initrd = tmp_path / "initramfs.xz"
    initrd.write_bytes(os.urandom(1_000_000))
    with Servers(root, kernel, initrd) as s:
        yield s


def _run(args: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------- TFTP


def test_tftp_hpa_plain_rfc1350(servers: Servers, tmp_path: Path) -> None:
    tftp = _need("tftp")
    port = str(servers.tftp.port)
    root = servers.tftp.root
    r = _run([tftp, "-m", "binary", "127.0.0.1", port, "-c", "get", "undionly.kpxe", "u"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "u").read_bytes() == (root / "undionly.kpxe").read_bytes()
    sent = servers.wait_for("tftp-sent")
    assert sent[-1].path == "undionly.kpxe" and sent[-1].detail is None  # no options: RFC 1350


def test_tftp_hpa_traversal_refused(servers: Servers, tmp_path: Path) -> None:
    tftp = _need("tftp")
    port = str(servers.tftp.port)
    for name in ("../secret", "link-out", "/etc/passwd", "..\\secret"):
        out = tmp_path / "stolen"
        r = _run([tftp, "-m", "binary", "127.0.0.1", port, "-c", "get", name, str(out)], tmp_path)
        text = r.stdout + r.stderr
        assert re.search(r"Error code [12]", text), (name, text)
        assert not out.exists() or out.stat().st_size == 0
    assert len(servers.wait_for("tftp-error", 4)) == 4


def test_atftp_negotiates_blksize_windowsize_tsize(servers: Servers, tmp_path: Path) -> None:
    atftp = _need("atftp")
    port = str(servers.tftp.port)
    r = _run(
        [
            atftp,
            "--trace",
            "--option",
            "blksize 1428",
            "--option",
            "windowsize 8",
            "--option",
            "tsize enable",
            "-g",
            "-r",
            "big.bin",
            "-l",
            "big",
            "127.0.0.1",
            port,
        ],
        tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "big").read_bytes() == (servers.tftp.root / "big.bin").read_bytes()
    text = r.stdout + r.stderr
    # atftp --trace prints the OACK it received from the server
    oack = re.search(r"received OACK <([^>]*)>", text)
    assert oack, text
    assert "blksize: 1428" in oack.group(1) and "windowsize: 8" in oack.group(1)
    ev = servers.wait_for("tftp-sent")[-1]
    assert set((ev.detail or "").split()) == {"blksize=1428", "windowsize=8", "tsize=3000000"}
    assert ev.size == 3_000_000


def test_atftp_block_number_rollover(servers: Servers, tmp_path: Path) -> None:
    """blksize 8: 70,000 blocks, so the 16-bit block number wraps past 65535."""
    atftp = _need("atftp")
    data = os.urandom(8 * 70_000 + 3)
    (servers.tftp.root / "roll.bin").write_bytes(data)
    args = [atftp, "--option", "blksize 8", "--option", "windowsize 16"]
    args += ["-g", "-r", "roll.bin", "-l", "roll", "127.0.0.1", str(servers.tftp.port)]
    r = _run(args, tmp_path, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "roll").read_bytes() == data


def test_atftp_traversal_and_write_refused(servers: Servers, tmp_path: Path) -> None:
    atftp = _need("atftp")
    port = str(servers.tftp.port)
    r = _run([atftp, "-g", "-r", "../secret", "-l", "s", "127.0.0.1", port], tmp_path)
    assert r.returncode != 0
    stolen = tmp_path / "s"
    assert not stolen.exists() or b"must never" not in stolen.read_bytes()
    (tmp_path / "up").write_text("upload")
    r = _run([atftp, "-p", "-l", "up", "-r", "up", "127.0.0.1", port], tmp_path)
    assert r.returncode != 0
    assert not (servers.tftp.root / "up").exists()
    details = [e.detail or "" for e in servers.wait_for("tftp-error", 2)]
    assert any("refused" in d for d in details) and any("read-only" in d for d in details)


# --------------------------------------------------------------------------- HTTP


def _curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    curl = _need("curl")
    return subprocess.run([curl, "-sS", *args], capture_output=True, timeout=60)


def test_curl_head_matches_get_headers(servers: Servers) -> None:
    base = f"http://127.0.0.1:{servers.http.port}"
    head = _curl("-I", f"{base}/boot/52-54-00-10-00-11/kernel").stdout.decode()
    assert head.startswith("HTTP/1.1 200 OK")
    assert "Content-Length: 2000000" in head and "Accept-Ranges: bytes" in head
    r = _curl("-o", "/dev/null", "-w", "%{http_code} %{size_download}", f"{base}/tftp/snponly.efi")
    assert r.stdout.decode() == f"200 {(servers.tftp.root / 'snponly.efi').stat().st_size}"


def test_curl_range(servers: Servers) -> None:
    base = f"http://127.0.0.1:{servers.http.port}"
    r = _curl("-i", "-r", "1000-1099", f"{base}/boot/52-54-00-10-00-11/initramfs.xz")
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 206 Partial Content")
    assert b"Content-Range: bytes 1000-1099/1000000" in head
    assert len(body) == 100
    r = _curl("-i", "-r", "5000000-", f"{base}/boot/52-54-00-10-00-11/initramfs.xz")
    assert r.stdout.startswith(b"HTTP/1.1 416") and b"Content-Range: bytes */1000000" in r.stdout


def test_curl_keep_alive_reuses_one_connection(servers: Servers) -> None:
    base = f"http://127.0.0.1:{servers.http.port}"
    r = _curl(
        "-v",
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        f"{base}/ipxe/52-54-00-10-00-11.ipxe",
        f"{base}/boot/52-54-00-10-00-11/kernel",
    )
    err = r.stderr.decode()
    assert r.returncode == 0, err
    assert err.count("Connected to 127.0.0.1") == 1
    assert "Re-using existing connection" in err
    sent = servers.wait_for("http-sent", 2)[-2:]
    assert [e.size for e in sent] == [len(b"#!ipxe\necho known\n"), 2_000_000]
    assert sent[0].client == sent[1].client  # same TCP connection


def test_curl_traversal_refused(servers: Servers) -> None:
    base = f"http://127.0.0.1:{servers.http.port}"
    for path in (
        "/tftp/../../../etc/passwd",
        "/tftp/%2e%2e/%2e%2e/etc/passwd",
        "/tftp/..%2f..%2fetc%2fpasswd",
        "/tftp/link-out",
        "/boot/52-54-00-10-00-11/../../secret",
    ):
        r = _curl("--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", base + path)
        assert r.stdout.decode() in ("400", "404"), path
    assert b"must never" not in _curl("--path-as-is", base + "/tftp/link-out").stdout


def test_unknown_mac_gets_exit_script_and_no_kernel(servers: Servers) -> None:
    base = f"http://127.0.0.1:{servers.http.port}"
    script = _curl(f"{base}/ipxe/52-54-00-99-99-99.ipxe").stdout.decode()
    assert script.startswith("#!ipxe") and "exit" in script and "kernel " not in script
    code = _curl("-o", "/dev/null", "-w", "%{http_code}", f"{base}/boot/52-54-00-99-99-99/kernel")
    assert code.stdout.decode() == "404"
