"""Push the rendered ``gitops/`` tree to the inventory's Git repository (bootstrap in GitOps
mode): the same dulwich code as ``cloudctl render --commit`` (:func:`cloudctl.gitops.commit_tree`).

The tree replaces ``gitops.path`` in the branch (files cloudctl no longer renders are removed)
and the cluster record is written beside it; nothing is committed when the content is
unchanged, so reruns are idempotent. Files marked secret are refused. The secrets bundle is
not committed here (``render --commit`` does that, encrypted). Credentials are whatever the
URL carries (ssh: the agent and ssh configuration).
"""

from __future__ import annotations

from pathlib import Path

from ..gitops import commit_tree
from ..inventory.models import Inventory
from ..render.files import Files


def push_tree(files: Files, inv: Inventory, *, cache: Path | None = None) -> str:
    """Commit ``gitops/`` at ``gitops.path`` of ``gitops.branch`` and push; the branch head
    (the new commit, or the existing head when nothing changed)."""
    result = commit_tree(inv, files, push=True, cache=cache)
    assert result.head is not None  # the cluster record alone makes a first commit
    return result.head
