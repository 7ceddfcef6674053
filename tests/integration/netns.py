"""Network-namespace labs for root integration tests.

A ``Lab`` is a private layer-2 segment: a Linux bridge inside its own "switch" namespace and one
namespace per host, each attached by a veth pair whose host end is ``eth0`` with the MAC and
address the test asks for. Nothing touches the machine's real interfaces; everything is deleted
on exit. Other tests import this module (TFTP/HTTP/QEMU labs)::

    with Lab("dh") as lab:
        srv = lab.add_host("srv", ip="10.20.0.2/24")
        cli = lab.add_host("cli", mac="52:54:00:10:00:11")
        cli.run(["busybox", "udhcpc", ...])
        with srv.entered():          # sockets created here live in srv's namespace
            ...
        tap = lab.add_tap("tap0")    # a tap port on the bridge; run QEMU via lab.switch_cmd()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import os
import subprocess
import threading
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

CLONE_NEWNET = 0x40000000
T = TypeVar("T")
_libc = ctypes.CDLL(None, use_errno=True)
_lock = threading.Lock()
_BRIDGE_OPTS = ("forward_delay", "0", "stp_state", "0")


def is_root() -> bool:
    return os.geteuid() == 0


def require_root(what: str = "network namespaces") -> None:
    if not is_root():
        pytest.skip(f"needs root: {what}")


def sh(cmd: Sequence[str], *, check: bool = True, timeout: float = 30) -> str:
    res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def entered_netns(name: str) -> Iterator[None]:
    """Run the calling thread inside netns ``name`` (sockets opened here stay there)."""
    with _lock:
        own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


@dataclass
class Host:
    ns: str
    mac: str
    ip: str | None
    ifname: str = "eth0"

    def cmd(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = 60) -> str:
        return sh(self.cmd(argv), check=check, timeout=timeout)

    def popen(self, argv: Sequence[str], **kw) -> subprocess.Popen:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.STDOUT)
        return subprocess.Popen(self.cmd(argv), **kw)

    def entered(self) -> contextlib.AbstractContextManager[None]:
        return entered_netns(self.ns)

    def addresses(self) -> list[str]:
        out = self.run(["ip", "-4", "-o", "addr", "show", "dev", self.ifname])
        return [line.split()[3] for line in out.splitlines()]


@dataclass
class Lab:
    """A bridge in its own namespace plus hosts attached to it; removed on exit."""

    tag: str
    hosts: dict[str, Host] = field(default_factory=dict)
    taps: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.prefix = f"{self.tag}{os.getpid() % 100000}"
        self.switch = f"{self.prefix}-sw"
        self._n = 0

    def __enter__(self) -> Lab:
        require_root()
        sh(["ip", "netns", "add", self.switch])
        sw = ["ip", "netns", "exec", self.switch]
        # the switch is not a host: without IPv6 its bridge and ports take no link-local
        # address, so its kernel never solicits routers (every few seconds on current kernels)
        # nor joins multicast groups on the segment under test
        for scope in ("all", "default"):
            sh([*sw, "sysctl", "-qw", f"net.ipv6.conf.{scope}.disable_ipv6=1"])
        sh([*sw, "ip", "link", "add", "br0", "type", "bridge", *_BRIDGE_OPTS])
        sh([*sw, "ip", "link", "set", "br0", "up"])
        sh([*sw, "ip", "link", "set", "lo", "up"])
        return self

    def __exit__(self, *exc: object) -> None:
        for host in self.hosts.values():
            for pid in sh(["ip", "netns", "pids", host.ns], check=False).split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            sh(["ip", "netns", "del", host.ns], check=False)
        for pid in sh(["ip", "netns", "pids", self.switch], check=False).split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), 9)
        sh(["ip", "netns", "del", self.switch], check=False)

    def _veth_names(self) -> tuple[str, str]:
        self._n += 1
        base = f"v{os.getpid() % 100000}x{self._n}"
        return f"{base}a", f"{base}b"

    def add_host(
        self, name: str, *, mac: str | None = None, ip: str | None = None, mtu: int | None = None
    ) -> Host:
        ns = f"{self.prefix}-{name}"
        sh(["ip", "netns", "add", ns])
        a, b = self._veth_names()
        sh(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
        sh(["ip", "link", "set", a, "netns", ns])
        sh(["ip", "link", "set", b, "netns", self.switch])
        in_ns = ["ip", "netns", "exec", ns]
        sh([*in_ns, "ip", "link", "set", a, "name", "eth0"])
        if mac:
            sh([*in_ns, "ip", "link", "set", "eth0", "address", mac])
        if mtu:
            sh([*in_ns, "ip", "link", "set", "eth0", "mtu", str(mtu)])
        if ip:
            sh([*in_ns, "ip", "addr", "add", ip, "dev", "eth0"])
        sh([*in_ns, "ip", "link", "set", "eth0", "up"])
        sh([*in_ns, "ip", "link", "set", "lo", "up"])
        sw = ["ip", "netns", "exec", self.switch]
        sh([*sw, "ip", "link", "set", b, "master", "br0"])
        sh([*sw, "ip", "link", "set", b, "up"])
        real_mac = sh([*in_ns, "cat", "/sys/class/net/eth0/address"]).strip()
        host = Host(ns=ns, mac=real_mac, ip=ip.split("/")[0] if ip else None)
        self.hosts[name] = host
        return host

    def add_tap(self, name: str) -> str:
        """A tap port on the lab bridge, inside the switch namespace (QEMU ``-netdev tap``).

        Start QEMU with ``lab.switch_cmd([...])`` so it opens the tap in that namespace; the lab
        stays isolated from the machine's real interfaces.
        """
        sw = ["ip", "netns", "exec", self.switch]
        sh([*sw, "ip", "tuntap", "add", "dev", name, "mode", "tap"])
        sh([*sw, "ip", "link", "set", name, "master", "br0"])
        sh([*sw, "ip", "link", "set", name, "up"])
        self.taps.append(name)
        return name

    def switch_cmd(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.switch, *argv]


class LoopInNetns:
    """An asyncio loop in a background thread that lives in netns ``ns`` (servers under test).

    ``call(coro)`` runs a coroutine on it and returns its result::

        with LoopInNetns(srv.ns) as loop:
            server = DhcpServer(cfg)
            loop.call(server.start())
            ...                                  # clients run in other namespaces
            loop.call(server.stop())
    """

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"loop-{ns}", daemon=True)
        self._error: BaseException | None = None

    def _main(self) -> None:
        try:
            with entered_netns(self.ns):
                self.loop = asyncio.new_event_loop()
                self._ready.set()
                self.loop.run_forever()
                self.loop.close()
        except BaseException as exc:  # surfaced by __enter__/call
            self._error = exc
            self._ready.set()

    def __enter__(self) -> LoopInNetns:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return self.submit(coro).result(timeout)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the loop without waiting (``.result()``/``.cancel()`` later)."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def __exit__(self, *exc: object) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def with_catalog_versions(inventory_text: str) -> str:
    """Fill ``TALOS_VERSION``/``K8S_VERSION`` in a lab inventory with the newest Talos release
    of cloudctl's catalog and the newest Kubernetes minor it supports (labs do not care which)."""
    from cloudctl.catalog import parse_version, talos_catalog

    cat = talos_catalog()
    talos = max(cat.releases, key=parse_version)
    minor = cat.minor(talos)
    k8s = f"v{minor.kubernetes_max}.0" if minor else "v1.33.0"
    return inventory_text.replace("TALOS_VERSION", talos).replace("K8S_VERSION", k8s)


@contextlib.contextmanager
def veth_pair(tag: str, ip_a: str, ip_b: str) -> Iterator[tuple[Host, Host]]:
    """Two namespaces joined by one veth pair (no bridge): the benchmark topology."""
    require_root()
    base = f"{tag}{os.getpid() % 100000}"
    hosts = [
        Host(ns=f"{base}-a", mac="", ip=ip_a.split("/")[0]),
        Host(ns=f"{base}-b", mac="", ip=ip_b.split("/")[0]),
    ]
    try:
        for h in hosts:
            sh(["ip", "netns", "add", h.ns])
        sh(["ip", "link", "add", f"{base}a", "type", "veth", "peer", "name", f"{base}b"])
        for h, end, ip in zip(hosts, (f"{base}a", f"{base}b"), (ip_a, ip_b), strict=True):
            sh(["ip", "link", "set", end, "netns", h.ns])
            sh(h.cmd(["ip", "link", "set", end, "name", "eth0"]))
            sh(h.cmd(["ip", "addr", "add", ip, "dev", "eth0"]))
            sh(h.cmd(["ip", "link", "set", "eth0", "up"]))
            sh(h.cmd(["ip", "link", "set", "lo", "up"]))
            h.mac = sh(h.cmd(["cat", "/sys/class/net/eth0/address"])).strip()
        yield hosts[0], hosts[1]
    finally:
        for h in hosts:
            for pid in sh(["ip", "netns", "pids", h.ns], check=False).split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            sh(["ip", "netns", "del", h.ns], check=False)
