"""The paramiko edge of ``install-ssh``: connect with a pinned host key, run commands, stream.

Host keys live in the cluster directory's ``known_hosts`` (OpenSSH format). An unknown key is
refused unless the caller accepts new keys (``--accept-new-host-key``: the key is then
recorded); a key that differs from the pinned one is always refused (exit 10). Only the
inventory's key authenticates (no agent, no ``~/.ssh`` keys, no passwords). The private key
and its passphrase are never printed; errors name the reference (``ssh.keyRef``) instead.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import paramiko

from ..errors import GateRefused, RemoteError, SecretsError, Timeout
from ..inventory.models import Node
from ..secrets.refs import resolve_secret_ref

WINDOW = 16 << 20
"""SSH channel window for streaming (paramiko's 2 MiB default stalls on every round trip)."""
_KEY_TYPES: tuple[type[paramiko.PKey], ...] = (paramiko.Ed25519Key, paramiko.ECDSAKey,
                                                paramiko.RSAKey)


def fingerprint(key: paramiko.PKey) -> str:
    return key.fingerprint  # "SHA256:<base64>", as ssh-keygen -l prints it


def load_key(node: Node) -> tuple[paramiko.PKey, list[str]]:
    """The node's private key, and the secret strings to redact (key text, passphrase)."""
    assert node.ssh is not None
    text = resolve_secret_ref(node.name, node.ssh.key_ref, "SSH key", strip=False)
    passphrase = (resolve_secret_ref(node.name, node.ssh.passphrase_ref, "SSH key passphrase")
                  if node.ssh.passphrase_ref else None)
    secrets = [line for line in text.splitlines() if len(line) >= 16]
    if passphrase:
        secrets.append(passphrase)
    for cls in _KEY_TYPES:
        try:
            return cls.from_private_key(io.StringIO(text), password=passphrase), secrets
        except paramiko.PasswordRequiredException:
            raise SecretsError(f"node {node.name}: the SSH key ({node.ssh.key_ref}) is "
                               "encrypted; give ssh.passphraseRef") from None
        except (paramiko.SSHException, ValueError):
            continue
    raise SecretsError(f"node {node.name}: {node.ssh.key_ref} is not an OpenSSH/PEM private "
                       "key paramiko can read (ed25519, ECDSA or RSA), or the passphrase is "
                       "wrong")


class _PinNewKeys(paramiko.MissingHostKeyPolicy):
    """Unknown host key: record it (``accept``) or refuse naming its fingerprint."""

    def __init__(self, node: str, known_hosts: Path, accept: bool) -> None:
        self.node, self.known_hosts, self.accept = node, known_hosts, accept
        self.added: str | None = None

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        if not self.accept:
            raise GateRefused(
                f"node {self.node}: the SSH host key of {hostname} is not in "
                f"{self.known_hosts} ({key.get_name()} {fingerprint(key)}); check that "
                "fingerprint on the host's console, then rerun with --accept-new-host-key to "
                "pin it")
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        client.save_host_keys(str(self.known_hosts))
        self.added = f"{key.get_name()} {fingerprint(key)}"


class Cancelled(Exception):
    """The caller was interrupted (Ctrl-C): the session stops at the next chunk or poll."""


@dataclass
class Result:
    code: int
    out: str
    err: str


class Session:
    """One SSH connection to a node (use as a context manager)."""

    def __init__(self, node: Node, client: paramiko.SSHClient, where: str,
                 pinned: str | None, stop: threading.Event | None = None) -> None:
        self.node, self.client, self.where = node, client, where
        self.stop = stop or threading.Event()
        """Set from another thread to abandon the current command (``Cancelled``)."""
        self.pinned = pinned
        """``type fingerprint`` of a host key recorded by this connection, else None."""

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def _transport(self) -> paramiko.Transport:
        t = self.client.get_transport()
        if t is None or not t.is_active():
            raise RemoteError(f"node {self.node.name}: SSH connection to {self.where} closed")
        return t

    def run(self, command: str, *, timeout: float = 60.0, stdin: bytes | None = None) -> Result:
        chan = self._transport().open_session()
        chan.settimeout(timeout)
        try:
            chan.exec_command(command)
            if stdin is not None:
                chan.sendall(stdin)
            chan.shutdown_write()
            out, err = _drain(chan, timeout, self.stop)
            return Result(chan.recv_exit_status(), out, err)
        except TimeoutError:
            raise Timeout(f"node {self.node.name}: {command.split()[0]!r} on {self.where} "
                          f"did not finish within {timeout:g}s") from None
        except (ConnectionResetError, EOFError, paramiko.SSHException):
            raise RemoteError(f"node {self.node.name}: SSH connection to {self.where} lost "
                              f"during {command.split()[0]!r}") from None
        finally:
            chan.close()

    def stream(self, command: str, chunks: Iterable[bytes],
               on_sent: Callable[[int], None], *, timeout: float = 120.0) -> Result:
        """Run ``command`` with ``chunks`` as its stdin; ``on_sent(n)`` after each chunk.
        A command that exits early (dd refusing the disk) ends the stream with its error."""
        chan = self._transport().open_session(window_size=WINDOW)
        chan.settimeout(timeout)
        try:
            chan.exec_command(command)
            try:
                for block in chunks:
                    if self.stop.is_set():
                        raise Cancelled
                    if chan.exit_status_ready():
                        break
                    chan.sendall(block)
                    on_sent(len(block))
            except (OSError, EOFError, paramiko.SSHException):
                pass  # the command ended (its exit status says why) or the connection died
            if not chan.exit_status_ready():
                chan.shutdown_write()
            out, err = _drain(chan, timeout, self.stop)
            return Result(chan.recv_exit_status(), out, err)
        except TimeoutError:
            raise Timeout(f"node {self.node.name}: no progress from {command.split()[0]!r} on "
                          f"{self.where} for {timeout:g}s") from None
        except (ConnectionResetError, EOFError, paramiko.SSHException):
            raise RemoteError(f"node {self.node.name}: SSH connection to {self.where} lost "
                              f"during {command.split()[0]!r}; run install-ssh again to "
                              "resume") from None
        finally:
            chan.close()


def _drain(chan: paramiko.Channel, timeout: float,
           stop: threading.Event) -> tuple[str, str]:
    out, err = bytearray(), bytearray()
    deadline = time.monotonic() + timeout
    while not (chan.exit_status_ready() and not chan.recv_ready()
               and not chan.recv_stderr_ready()):
        if stop.is_set():
            raise Cancelled
        if chan.closed and not chan.exit_status_ready() and not chan.recv_ready() \
                and not chan.recv_stderr_ready():
            raise ConnectionResetError("the SSH connection was closed")
        if chan.recv_ready():
            out += chan.recv(65536)
        elif chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)
        elif time.monotonic() > deadline:
            raise TimeoutError
        else:
            time.sleep(0.01)
    return out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def connect(node: Node, pkey: paramiko.PKey, *, known_hosts: Path, accept_new: bool,
            timeout: float = 20.0, stop: threading.Event | None = None) -> Session:
    """An authenticated session to the node's SSH server (``pkey`` from ``load_key``), host
    key checked against ``known_hosts``."""
    assert node.ssh is not None
    host, port, user = node.ssh_address, node.ssh.port, node.ssh.user
    where = f"{user}@{host}:{port}"
    client = paramiko.SSHClient()
    if known_hosts.is_file():
        try:
            client.load_host_keys(str(known_hosts))
        except (OSError, paramiko.SSHException) as exc:
            raise GateRefused(f"node {node.name}: cannot read {known_hosts}: {exc}") from None
    policy = _PinNewKeys(node.name, known_hosts, accept_new)
    client.set_missing_host_key_policy(policy)  # raises GateRefused for an unknown key
    try:
        client.connect(host, port=port, username=user, pkey=pkey, allow_agent=False,
                       look_for_keys=False, timeout=timeout, banner_timeout=timeout,
                       auth_timeout=timeout)
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise GateRefused(
            f"node {node.name}: the SSH host key of {host}:{port} changed: it offers "
            f"{exc.key.get_name()} {fingerprint(exc.key)} but {known_hosts} pins "
            f"{exc.expected_key.get_name()} {fingerprint(exc.expected_key)}; nothing was "
            "sent. If the host was reinstalled, check the new fingerprint on its console and "
            f"remove its line from {known_hosts}") from None
    except paramiko.AuthenticationException:
        client.close()
        raise RemoteError(f"node {node.name}: SSH authentication as {where} failed with the "
                          f"key from {node.ssh.key_ref}") from None
    except TimeoutError:
        client.close()
        raise Timeout(f"node {node.name}: SSH to {where} did not answer within "
                      f"{timeout:g}s") from None
    except (OSError, paramiko.SSHException) as exc:
        client.close()
        raise RemoteError(f"node {node.name}: SSH to {where} failed: {exc}") from None
    transport = client.get_transport()
    if transport is not None:
        transport.set_keepalive(15)
    return Session(node, client, where, policy.added, stop)
