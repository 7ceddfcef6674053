"""Push the rendered ``gitops/`` tree to the inventory's Git repository (git CLI).

The tree replaces ``gitops.path`` in the branch (files cloudctl no longer renders are removed);
nothing is committed when the content is unchanged, so reruns are idempotent. Credentials are
whatever the git CLI is configured with (ssh agent, credential helper); none are handled here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import RemoteError
from ..inventory.models import Inventory
from ..render.files import Files
from ..render.gitops.platform import gitops_path

PREFIX = "gitops/"
ENV = {
    "GIT_AUTHOR_NAME": "cloudctl",
    "GIT_AUTHOR_EMAIL": "cloudctl@localhost",
    "GIT_COMMITTER_NAME": "cloudctl",
    "GIT_COMMITTER_EMAIL": "cloudctl@localhost",
    "GIT_TERMINAL_PROMPT": "0",
}


def _git(args: list[str], cwd: Path, repo: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                             check=True, timeout=120, env={**os.environ, **ENV})
    except FileNotFoundError:
        raise RemoteError("git is not installed (needed to push the GitOps tree)") from None
    except subprocess.CalledProcessError as exc:
        raise RemoteError(f"git {args[0]} {repo}: {exc.stderr.strip() or exc}") from None
    except subprocess.TimeoutExpired:
        raise RemoteError(f"git {args[0]} {repo}: timed out") from None
    return out.stdout.strip()


def push_tree(files: Files, inv: Inventory) -> str:
    """Commit ``gitops/`` at ``gitops.path`` of ``gitops.branch`` and push; the commit id."""
    assert inv.gitops is not None
    repo, branch = inv.gitops.repo, inv.gitops.branch
    sub = gitops_path(inv)
    with tempfile.TemporaryDirectory(prefix="cloudctl-gitops-") as tmp:
        work = Path(tmp) / "repo"
        work.mkdir()
        _git(["init", "-q", "-b", branch], work, repo)
        _git(["remote", "add", "origin", repo], work, repo)
        heads = _git(["ls-remote", "--heads", "origin", branch], work, repo)
        if heads:
            _git(["fetch", "-q", "--depth", "1", "origin", branch], work, repo)
            _git(["checkout", "-q", "-B", branch, "FETCH_HEAD"], work, repo)
        target = work / sub
        if target.exists():
            shutil.rmtree(target)
        for rel, f in files.items():
            if not rel.startswith(PREFIX):
                continue
            if f.secret:  # never: the GitOps tree holds no secrets; refuse rather than leak
                raise RemoteError(f"refusing to push {rel}: it is marked secret")
            dest = target / rel[len(PREFIX):]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(f.data)
        _git(["add", "-A", "--", sub], work, repo)
        if _git(["status", "--porcelain", "--", sub], work, repo):
            _git(["commit", "-q", "-m", f"cloudctl: render cluster {inv.cluster.name}"],
                 work, repo)
            _git(["push", "-q", "origin", f"HEAD:refs/heads/{branch}"], work, repo)
        return _git(["rev-parse", "HEAD"], work, repo)
