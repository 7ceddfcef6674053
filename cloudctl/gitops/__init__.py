"""The GitOps repository, through dulwich: commit the rendered tree (and, from ``render
--commit``, the age-encrypted secrets bundle) at the inventory's ``gitops.path`` on
``gitops.branch`` of ``gitops.repo``, and push it.

Public API (everything else is internal)::

    commit_tree(inv, files, *, push, cache=None, secrets=None, message_extra=(),
                dry_run=False) -> CommitResult

* ``inv`` — the Inventory (``inv.gitops`` must be set: InputError otherwise).
* ``files`` — the render output (``render_all``); only ``gitops/`` files are committed, any
  of them marked secret (or holding a PEM private key) is refused with SecretsError.
* ``push`` — push the branch to ``gitops.repo`` after committing (also sends earlier
  unpushed commits of the cache). A push that fails leaves the remote branch unchanged
  (RemoteError, exit 6, credentials never shown).
* ``cache`` — the bare local repository commits are made in (``render --commit`` uses
  ``<cluster dir>/gitops.git``); None: a temporary one (then commit without push is pointless).
* ``secrets`` — ``{"secrets.yaml.age": bytes, "admin.yaml.age": bytes}`` to commit at
  ``secrets/<cluster>/`` (age ciphertext only; anything else is refused); None leaves that
  directory as it is in the repository.
* ``message_extra`` — lines appended to the commit message (e.g. an upgrade's reason).
* ``dry_run`` — fetch and compute the summary, commit nothing.

``CommitResult``: ``commit_id`` (the new commit, None when nothing changed — no empty commit
is ever made), ``head`` (branch head afterwards), ``pushed``, ``changes`` (the files, as
``FileChange(kind, path)``), ``summary`` (the message's lines: chart versions per
HelmRelease, values changed per release, nodes added/removed, Talos/Kubernetes versions),
``message``, ``releases_changed``. The summary is the pure :func:`summarize` (old files, new
files) in :mod:`cloudctl.gitops.changes`; what lives where in the repository is
:mod:`cloudctl.gitops.layout`; the dulwich side is :mod:`cloudctl.gitops.repo`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, Problem
from ..inventory.models import Inventory
from ..render.files import Files
from .changes import ChangeSummary, FileChange, commit_message, summarize
from .layout import RepoPaths, repo_content, repo_paths
from .repo import open_repository, redact_url

__all__ = ["ChangeSummary", "CommitResult", "FileChange", "RepoPaths", "commit_tree",
           "redact_url", "repo_paths", "summarize"]


@dataclass(frozen=True)
class CommitResult:
    commit_id: str | None
    """The commit made; None when the repository already held this content."""
    head: str | None
    """The branch head afterwards (the new commit, or the existing head)."""
    pushed: bool
    """Whether the remote branch was updated by this call."""
    remote_head: str | None
    """The remote branch head afterwards, as last seen."""
    changes: tuple[FileChange, ...]
    summary: tuple[str, ...]
    message: str | None
    releases_changed: tuple[str, ...]
    notes: tuple[str, ...] = ()

    @property
    def unpushed(self) -> bool:
        return self.head is not None and self.head != self.remote_head


def commit_tree(
    inv: Inventory,
    files: Files,
    *,
    push: bool,
    cache: Path | None = None,
    secrets: Mapping[str, bytes] | None = None,
    message_extra: Sequence[str] = (),
    dry_run: bool = False,
) -> CommitResult:
    """Commit the rendered tree (see the module docstring)."""
    if inv.gitops is None:
        raise InputError(Problem("gitops", "no gitops section: nothing says which repository, "
                                 "branch and path to commit to"))
    content = repo_content(inv, files, secrets)
    name = inv.cluster.name

    def message(summary: ChangeSummary, first: bool) -> str:
        return commit_message(name, summary, first=first, extra=message_extra)

    with open_repository(inv.gitops.repo, inv.gitops.branch, cache) as repo:
        out = repo.commit(content, message, push=push, dry_run=dry_run)
    return CommitResult(out.commit_id, out.head, out.pushed, out.remote_head,
                        out.summary.files, out.summary.lines, out.message,
                        out.summary.releases_changed, out.notes)
