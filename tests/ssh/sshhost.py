"""A real OpenSSH server standing in for a rescue system, for root tests of the SSH paths.

``SshHost`` builds a two-host network-namespace segment (``ctl`` 10.31.0.1, where cloudctl and
ansible-runner run, and ``node`` 10.31.0.10) and starts ``/usr/sbin/sshd`` on the node inside
its own mount and PID namespaces, so that nothing a session runs can touch this machine:

* ``reboot``, ``poweroff``, ``halt``, ``shutdown``, ``systemctl`` and ``kexec`` are recording
  stand-ins (first on the sessions' PATH, and bind-mounted over the real binaries inside the
  mount namespace); ``calls()`` returns what they were asked;
* ``/proc/sysrq-trigger`` is /dev/null inside, ``/run`` is a private tmpfs (no host systemd or
  D-Bus sockets), and a ``reboot(2)`` in the child PID namespace only ends that namespace.

Disks are loop devices over sparse files (``disk(size)``); ``mount(disk)`` mounts one inside
the server's mount namespace, as a rescue system with the disk in use would have it. The client
key (ed25519, no passphrase) and the server's host key are generated per host.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from netns import Lab, require_root, sh

CTL_IP = "10.31.0.1"
NODE_IP = "10.31.0.10"
FAKES = ("reboot", "poweroff", "halt", "shutdown", "systemctl", "kexec")
_REAL_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")

_FAKE = """#!/bin/sh
# recording stand-in: this test host must never really reboot or kexec
echo "$(basename "$0") $*" >> {log}
exit 0
"""

_SETUP = """set -e
mount --make-rprivate /
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/sshd
if [ -e /proc/sysrq-trigger ]; then mount --bind /dev/null /proc/sysrq-trigger; fi
{binds}
exec /usr/sbin/sshd -D -e -f {config}
"""


class SshHost:
    """An OpenSSH server on ``NODE_IP`` in a netns + mount ns + PID ns; cleaned up on exit."""

    def __init__(self, tag: str = "ssh") -> None:
        self.lab = Lab(tag)
        self.dir = Path(tempfile.mkdtemp(prefix="cloudctl-sshhost-"))
        self.fakebin = self.dir / "fakebin"
        self.calls_log = self.dir / "calls.log"
        self.client_key = self.dir / "id_ed25519"
        self.host_key = self.dir / "ssh_host_ed25519_key"
        self.loops: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "sshd.log"

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> SshHost:
        require_root("an OpenSSH server in network, mount and PID namespaces")
        if not Path("/usr/sbin/sshd").is_file():
            raise RuntimeError("/usr/sbin/sshd missing: install Debian's openssh-server")
        self.lab.__enter__()
        try:
            self.ctl = self.lab.add_host("ctl", ip=f"{CTL_IP}/24")
            self.node = self.lab.add_host("node", ip=f"{NODE_IP}/24")
            self._prepare()
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for loop in self.loops:
            sh(["losetup", "-d", loop], check=False)
        self.lab.__exit__(None, None, None)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _prepare(self) -> None:
        self.fakebin.mkdir()
        for name in FAKES:
            p = self.fakebin / name
            p.write_text(_FAKE.format(log=self.calls_log))
            p.chmod(0o755)
        self.calls_log.touch()
        for key in (self.host_key, self.client_key):
            sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", str(key)])
        (self.dir / "authorized_keys").write_text(
            Path(f"{self.client_key}.pub").read_text())
        self.config = self.dir / "sshd_config"
        self.config.write_text(
            f"ListenAddress {NODE_IP}\nPort 22\nHostKey {self.host_key}\n"
            f"AuthorizedKeysFile {self.dir}/authorized_keys\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\n"
            "Subsystem sftp internal-sftp\n"
            f"SetEnv PATH={self.fakebin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
            "/sbin:/bin\n")

    def _binds(self) -> str:
        lines = []
        seen: set[str] = set()
        for name in FAKES:
            for d in _REAL_DIRS:
                real = Path(d) / name
                if real.exists():
                    target = os.path.realpath(real)
                    if target not in seen:
                        seen.add(target)
                        lines.append(f"mount --bind {self.fakebin / name} {target}")
        return "\n".join(lines)

    def _start(self) -> None:
        script = _SETUP.format(binds=self._binds(), config=self.config)
        self.proc = subprocess.Popen(
            self.node.cmd(["unshare", "--mount", "--pid", "--fork", "--mount-proc",
                           "sh", "-c", script]),
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.log.read_text()[-2000:]}")
            res = subprocess.run(self.ctl.cmd(["sh", "-c", f"exec 3<>/dev/tcp/{NODE_IP}/22"]),
                                 capture_output=True)
            if res.returncode == 0 or self._port_open():
                return
            time.sleep(0.1)
        raise RuntimeError(f"sshd did not listen within 20 s: {self.log.read_text()[-2000:]}")

    def _port_open(self) -> bool:
        with self.lab_entered_ctl(), contextlib.suppress(OSError), \
                socket.create_connection((NODE_IP, 22), timeout=0.5):
            return True
        return False

    def lab_entered_ctl(self) -> contextlib.AbstractContextManager[None]:
        return self.ctl.entered()

    # ------------------------------------------------------------------ what tests use

    @property
    def server_pid(self) -> int:
        """sshd's PID as this machine sees it (the child of ``unshare --fork``)."""
        assert self.proc is not None
        # ip netns exec execs unshare, so self.proc.pid is unshare; its child is sshd
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return int(children.split()[0])

    def in_server(self, argv: list[str], *, check: bool = True) -> str:
        """Run a command in the server's mount and PID namespaces (as its sessions see them)."""
        return sh(["nsenter", "-t", str(self.server_pid), "-m", "-n", "-p", *argv], check=check)

    def known_hosts_line(self) -> str:
        kind, blob, *_ = Path(f"{self.host_key}.pub").read_text().split()
        return f"{NODE_IP} {kind} {blob}\n"

    def calls(self) -> list[str]:
        return self.calls_log.read_text().splitlines()

    def wait_for_call(self, prefix: str, *, after: int = 0, timeout: float = 10) -> list[str]:
        """The calls recorded since index ``after``, once one starting with ``prefix`` is
        among them (commands run detached after the session ends arrive a little later)."""
        deadline = time.monotonic() + timeout
        while True:
            calls = self.calls()[after:]
            if any(c.startswith(prefix) for c in calls):
                return calls
            if time.monotonic() > deadline:
                raise AssertionError(f"no {prefix!r} call within {timeout:g}s: {calls}")
            time.sleep(0.2)

    def disk(self, size: int) -> str:
        """A loop device of ``size`` bytes (sparse file, zero-filled)."""
        backing = self.dir / f"disk{len(self.loops)}.img"
        with backing.open("wb") as f:
            f.truncate(size)
        loop = sh(["losetup", "-f", "--show", str(backing)]).strip()
        self.loops.append(loop)
        return loop

    def mount(self, dev: str, *, fs: bool = True) -> str:
        """Make a filesystem on ``dev`` (if ``fs``) and mount it inside the server's namespace."""
        if fs:
            sh(["mkfs.ext4", "-q", "-F", dev])
        where = self.dir / f"mnt-{Path(dev).name}"
        where.mkdir(exist_ok=True)
        self.in_server(["mount", dev, str(where)])
        return str(where)

    @staticmethod
    def sha256(dev: str, size: int) -> str:
        h = hashlib.sha256()
        with open(dev, "rb") as f:
            left = size
            while left:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    break
                h.update(chunk)
                left -= len(chunk)
        return h.hexdigest()
