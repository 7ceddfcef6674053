"""Run a playbook through ansible-runner; its events become cloudctl events.

Each run gets a private data directory (``tempfile.mkdtemp``: 0700) holding the inventory, the
extra variables, the SSH private keys the inventory's ``keyRef``s resolve to (0600) and
ansible-runner's artifacts; it is deleted when the run ends, whatever the outcome. Every key and
passphrase is registered with the events' redactor before Ansible starts, and error messages
are redacted too. A key with a passphrase is opened here and handed to ssh unencrypted inside
that directory: the passphrase never reaches Ansible, ssh or a prompt. SSH always checks host
keys (``StrictHostKeyChecking=yes``) and never multiplexes connections (no ssh master outlives
the run).

A failed or unreachable host stops the play there (Ansible's own rule) and the run raises
``PlaybookFailed`` (exit 11) naming the task, the host and the module's message.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EnvironmentNotReady, InputError, PlaybookFailed, Problem, SecretsError
from ..errors import Timeout as TimeoutError_
from ..inventory.models import Inventory
from ..pipeline.events import Event, Events
from ..secrets.refs import resolve_secret_ref
from .events import Failure, failure_of, plain, translate
from .inventory import key_path

ENVVARS = {
    # one connection per task, no ControlMaster left behind holding a session
    "ANSIBLE_SSH_ARGS": "-C -o ControlMaster=no",
    "ANSIBLE_HOST_KEY_CHECKING": "True",
    "ANSIBLE_PIPELINING": "True",
    "ANSIBLE_RETRY_FILES_ENABLED": "False",
    "ANSIBLE_NOCOLOR": "1",
}
PARSE_ERROR_RCS = (4, 5)
"""ansible-playbook's exit codes for a playbook it cannot parse and for bad options."""


@dataclass(frozen=True)
class SshKey:
    """A private key (the text of the file) and its passphrase, resolved for one run."""

    key: str
    passphrase: str | None = None

    def unlocked(self, owner: str) -> str:
        """The key as Ansible's ssh gets it: without a passphrase. A key with one is opened
        here (``cryptography``) and written unencrypted into the run's 0700 private data
        directory only, so the passphrase never reaches Ansible or a prompt."""
        if self.passphrase is None:
            return self.key
        from cryptography.hazmat.primitives import serialization as ser

        data, phrase = self.key.encode(), self.passphrase.encode()
        load: Callable[[bytes, bytes], Any] = (
            ser.load_ssh_private_key if b"OPENSSH PRIVATE KEY" in data
            else ser.load_pem_private_key)
        try:
            key = load(data, phrase)
            out: bytes = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.OpenSSH,
                                           ser.NoEncryption())
        except (ValueError, TypeError) as exc:
            raise SecretsError(f"{owner}: the SSH key passphrase does not open the key, or "
                               f"the key cannot be used ({type(exc).__name__})") from None
        return out.decode()

    def secrets(self) -> list[str]:
        """Strings the redactor must hide: the key, each line of it, the passphrase."""
        return _key_secrets(self.key) + ([self.passphrase] if self.passphrase else [])


def _key_secrets(key: str) -> list[str]:
    lines = [ln.strip() for ln in key.splitlines()]
    return [key, key.strip(), *(ln for ln in lines if ln and not ln.startswith("-----"))]


def inventory_keys(inv: Inventory) -> dict[str, SshKey]:
    """The SSH key of every node with an ``ssh:`` section, resolved from its references."""
    keys = {}
    for node in inv.nodes:
        if node.ssh is None:
            continue
        key = resolve_secret_ref(node.name, node.ssh.key_ref, "SSH key", strip=False)
        phrase = (resolve_secret_ref(node.name, node.ssh.passphrase_ref, "SSH key passphrase")
                  if node.ssh.passphrase_ref else None)
        keys[node.name] = SshKey(key if key.endswith("\n") else key + "\n", phrase)
    return keys


@dataclass(frozen=True)
class PlaybookRun:
    playbook: Path
    inventory: Callable[[Path], dict[str, Any]]
    """Builds the Ansible inventory given the directory the keys are written to."""
    source: str
    """What names the playbook in errors (an inventory field such as
    ``hooks.afterBootstrap[0].playbook``, or the option that gave it)."""
    keys: Mapping[str, SshKey] = field(default_factory=dict)
    """Private key per Ansible host."""
    extravars: Mapping[str, Any] = field(default_factory=dict)
    limit: str | None = None
    check: bool = False
    """Ansible's check mode (``--check``): modules report what they would change."""
    syntax_check: bool = False
    timeout: float | None = None


@dataclass(frozen=True)
class PlaybookResult:
    playbook: Path
    status: str
    rc: int
    hosts: dict[str, str]
    """Per host: ``ok`` or ``failed`` (from the recap)."""
    changed: int
    """How many task results reported a change."""


def _write_keys(keys: Mapping[str, SshKey], key_dir: Path, events: Events) -> None:
    key_dir.mkdir(mode=0o700)
    for host, k in keys.items():
        text = k.unlocked(host)
        events.add_secrets(_key_secrets(text))
        path = key_path(key_dir, host)
        path.touch(mode=0o600)
        path.write_text(text)


def _output_tail(runner: Any, lines: int = 8) -> str:
    try:
        text = runner.stdout.read()
    except (OSError, AttributeError, ValueError):
        return ""
    kept = [ln for ln in plain(text).splitlines() if ln.strip()]
    return " | ".join(kept[-lines:])


def run_playbook(run: PlaybookRun, *, stage: str, events: Events) -> PlaybookResult:
    """Run ``run.playbook``; its events go to ``events`` as they come. Raises
    ``PlaybookFailed`` on a failed or unreachable host, ``InputError`` (naming ``run.source``)
    on a playbook Ansible cannot parse, ``Timeout`` after ``run.timeout`` seconds."""
    import ansible_runner
    from ansible_runner.exceptions import AnsibleRunnerException

    for k in run.keys.values():
        events.add_secrets(k.secrets())
    failures: list[Failure] = []
    changed = 0
    hosts: dict[str, str] = {}

    def on_event(raw: dict[str, Any]) -> bool:
        nonlocal changed
        failure = failure_of(raw)
        if failure is not None:
            failures.append(failure)
        for ev in translate(raw):
            if ev.kind == "ansible-host" and ev.phase == "changed":
                changed += 1
            if ev.kind == "ansible-stats" and ev.node:
                hosts[ev.node] = ev.phase or ""
            events.emit(Event(stage, ev.kind, ev.message, node=ev.node, phase=ev.phase,
                              error=ev.error))
        return False  # ansible-runner keeps its copy in the artifacts only if True

    pdd = Path(tempfile.mkdtemp(prefix="cloudctl-ansible-"))
    try:
        key_dir = pdd / "keys"
        _write_keys(run.keys, key_dir, events)
        cmdline = " ".join(opt for opt, on in (("--check", run.check),
                                                ("--syntax-check", run.syntax_check)) if on)
        try:
            runner = ansible_runner.run(
                private_data_dir=str(pdd),
                playbook=str(run.playbook.resolve()),
                inventory=run.inventory(key_dir),
                extravars=dict(run.extravars),
                envvars={**ENVVARS, "ANSIBLE_LOCAL_TEMP": str(pdd / "tmp")},
                limit=run.limit,
                cmdline=cmdline or None,
                quiet=True,
                timeout=int(run.timeout) if run.timeout else None,
                event_handler=on_event,
            )
        except (AnsibleRunnerException, OSError) as exc:  # e.g. no ansible-playbook
            raise EnvironmentNotReady(events.redactor(
                f"{run.source}: ansible-runner could not start {run.playbook}: "
                f"{type(exc).__name__}: {exc} (is ansible-core installed?)") or "") from None
        status, rc = str(runner.status), int(runner.rc if runner.rc is not None else -1)
        tail = "" if status == "successful" else _output_tail(runner)
    finally:
        shutil.rmtree(pdd, ignore_errors=True)
    _raise_for(run, status, rc, failures, tail, events)
    return PlaybookResult(run.playbook, status, rc, hosts, changed)


def _raise_for(run: PlaybookRun, status: str, rc: int, failures: list[Failure], tail: str,
               events: Events) -> None:
    def red(text: str) -> str:
        return events.redactor(text) or ""

    name = run.playbook.name
    if status == "timeout":
        raise TimeoutError_(red(f"{run.source}: playbook {name} did not finish within "
                                f"{run.timeout:.0f} s"))
    if failures:
        if len(failures) == 1:
            raise PlaybookFailed(red(f"playbook {name}: {failures[0]}"))
        lines = "\n".join(f"  - {f}" for f in failures)
        raise PlaybookFailed(red(f"playbook {name}: {len(failures)} task(s) failed:\n{lines}"))
    if status == "successful" and rc == 0:
        return
    if rc in PARSE_ERROR_RCS:
        raise InputError(Problem(run.source, red(
            f"ansible-playbook cannot run {run.playbook} (exit {rc}): {tail}")))
    raise PlaybookFailed(red(f"playbook {name}: ansible-playbook ended {status} (exit {rc})"
                             + (f": {tail}" if tail else "")))
