"""User-facing failures.

Every error a user can cause or meet is one of these types. Each names the offending input (a
field path and line of the inventory, a file, a node, a packet) and carries the process exit code
the CLI returns for it. Exceptions of libraries are translated into these at the module boundary.

Exit codes (also in ``cloudctl --help``):
    0  success
    1  unexpected internal error (a bug: please report it)
    2  invalid input: inventory, flags, values overrides
    3  secrets missing or unreadable
    4  rendering failed (a rendered artefact broke an upstream contract)
    5  environment not ready (interface, rogue DHCP server, missing assets, ports in use)
    6  a remote system refused or failed (Talos node, Kubernetes API, image factory)
    7  timed out waiting for a remote system
    8  a platform component failed (HelmRelease not Ready; the reason is printed)
    9  the cluster directory's state is unreadable, foreign, or contradicts the rack
       (state.json, bootstrap.json); the message names the file and what to do
   10  a safety gate refused: an upgrade gate, a node back on its old Talos version, or
       install-ssh refusing a disk or an SSH host key (nothing was written)
   11  an Ansible playbook failed (a hook, ``lab prepare-host``): a task failed or a host
       was unreachable; the message names the playbook, the task, the host and what failed
  130  interrupted (Ctrl-C / SIGINT); the state records it and ``--resume`` continues
"""

from __future__ import annotations

from dataclasses import dataclass


class CloudctlError(Exception):
    """Base of all user-facing errors."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Problem:
    """One finding about an input: where (dotted field path, optional line) and what."""

    path: str
    message: str
    line: int | None = None
    source: str | None = None

    def __str__(self) -> str:
        where = self.path or "(document)"
        if self.line is not None:
            loc = f"{self.source}:{self.line}" if self.source else f"line {self.line}"
            where = f"{where} ({loc})"
        return f"{where}: {self.message}"


class InputError(CloudctlError):
    """Invalid user input; lists every problem found, each with its field path."""

    exit_code = 2

    def __init__(self, problems: list[Problem] | Problem | str, *, source: str | None = None):
        if isinstance(problems, str):
            problems = [Problem("", problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems = list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        if len(self.problems) == 1:
            msg = f"{head}invalid: {self.problems[0]}"
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            msg = f"{head}{len(self.problems)} problems:\n{lines}"
        super().__init__(msg)


class InventoryError(InputError):
    """The inventory file is malformed or fails a semantic check."""


class SecretsError(CloudctlError):
    exit_code = 3


class RenderError(CloudctlError):
    exit_code = 4


class EnvironmentNotReady(CloudctlError):
    exit_code = 5


class RemoteError(CloudctlError):
    exit_code = 6


class Timeout(CloudctlError):
    exit_code = 7


class PlatformError(CloudctlError):
    exit_code = 8


class StateError(CloudctlError):
    """A state file in the cluster directory is corrupt, belongs elsewhere, or records a
    cluster the rack no longer has (the message names the file)."""

    exit_code = 9


class GateRefused(CloudctlError):
    """An upgrade gate refused to go on (a PodDisruptionBudget blocks the drain, etcd is
    unhealthy or would lose quorum, a node holds the last UpToDate replica of a volume), or a
    node did not come back on the version it was upgraded to (a silent A/B rollback), or
    ``install-ssh`` refused a disk (missing, too small, mounted, swap, read-only, the running
    root) or an SSH host key (unknown without --accept-new-host-key, or changed). The message
    names the node and what refused; nothing was written."""

    exit_code = 10


class PlaybookFailed(CloudctlError):
    """An Ansible playbook (an inventory hook, ``lab prepare-host``) stopped: a task failed
    or a host was unreachable. The message names the playbook, the task, the host and what the
    module said (secrets redacted)."""

    exit_code = 11


EXIT_INTERRUPTED = 130


class NodeFailures(CloudctlError):
    """One step failed on several nodes, each with its own error.

    Built by :func:`node_failures`, which makes the aggregate an instance of the deciding
    failure's own type too (``isinstance(err, InputError)`` holds when an input error decides),
    so callers and the exit code see the per-node type, never a blanket "remote error".
    """

    def __init__(self, what: str, failures: list[tuple[str, CloudctlError]], total: int):
        lines = "\n".join(f"  - {node}: {exc}" for node, exc in failures)
        CloudctlError.__init__(
            self, f"{what} failed on {len(failures)} of {total} node(s):\n{lines}")
        self.what = what
        self.failures = failures
        self.problems = [p for _, e in failures for p in getattr(e, "problems", [])]
        self.source = None


_AGGREGATES: dict[type[CloudctlError], type[NodeFailures]] = {}


def node_failures(
    what: str, failures: list[tuple[str, CloudctlError]], total: int
) -> CloudctlError:
    """The error for ``what`` failing on some nodes. Its exit code is the deciding failure's:
    the failures' own code when they agree, else the lowest (an input error beats a remote
    one: fix the input first)."""
    decider = min((exc for _, exc in failures), key=lambda e: e.exit_code)
    base = type(decider)
    cls = _AGGREGATES.get(base)
    if cls is None:
        cls = type(f"{base.__name__}OnNodes", (NodeFailures, base), {})
        _AGGREGATES[base] = cls
    err = cls(what, failures, total)
    err.exit_code = decider.exit_code
    return err
