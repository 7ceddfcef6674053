"""The GitOps repository through dulwich (no git CLI): fetch one branch, commit owned
directories on top of it, push with a compare-and-swap on the branch.

A :class:`Repository` works in a bare *cache* repository on this machine (``render --commit``
keeps it at ``<cluster dir>/gitops.git``; without one a temporary repository is used). Its
``refs/heads/<branch>`` is the local branch, ``refs/remotes/origin/<branch>`` the remote's head
as last fetched. A commit is always based on the remote's head unless the local branch is
ahead of it (unpushed commits, which a later push sends); when the remote moved past unpushed
local commits those are superseded (they were never published, and a commit records the whole
content of the owned directories, so nothing is lost by rebuilding on the remote's head).

A push updates the remote branch only if it still points where it was fetched from (the
expected old value is checked before any object is sent, and receive-pack checks it again):
a remote that moved or a rejected ref update leaves the remote branch as it was; every failure
(transport included) raises RemoteError, and the commit stays in the cache for the next push.
Credentials are whatever the URL carries (or the ssh agent / git config for ssh); URLs are
shown with their user info replaced by ``***``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from dulwich.client import GitClient, get_transport_and_path
from dulwich.config import ConfigFile, StackedConfig, env_config
from dulwich.errors import GitProtocolError, HangupException, NotGitRepository
from dulwich.graph import can_fast_forward
from dulwich.index import commit_tree
from dulwich.object_store import iter_tree_contents
from dulwich.objects import Blob, Commit, ObjectID
from dulwich.refs import Ref, check_ref_format
from dulwich.repo import Repo

from ..errors import InputError, Problem, RemoteError
from .changes import ChangeSummary, summarize

AUTHOR = b"cloudctl <cloudctl@localhost>"
FILE_MODE = 0o100644
POST_BUFFER = b"512m"
"""HTTP pushes up to this size go with Content-Length (as git's http.postBuffer); some
servers (CGI front-ends, some proxies) cannot read a chunked request body."""


def redact_url(url: str) -> str:
    """``url`` with any user name and password replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def _scrub(text: str, url: str) -> str:
    """``text`` with ``url`` and its credentials (raw or percent-decoded) removed."""
    shown = redact_url(url)
    text = text.replace(url, shown)
    try:
        parts = urlsplit(url)
    except ValueError:
        return text
    for secret in (parts.password, parts.username):
        if secret:
            for form in {secret, unquote(secret)}:
                if len(form) >= 3:
                    text = text.replace(form, "***")
    return text


@dataclass(frozen=True)
class Outcome:
    """What :meth:`Repository.commit` did."""

    commit_id: str | None
    """The commit made, or None when the content was already there."""
    head: str | None
    """The local branch head afterwards."""
    base: str | None
    """The commit the new content was compared with (None: an empty branch)."""
    pushed: bool
    remote_head: str | None
    """The remote branch head afterwards (as last seen)."""
    summary: ChangeSummary
    message: str | None
    notes: tuple[str, ...]


def _oid(hexsha: str) -> ObjectID:
    return ObjectID(hexsha.encode())


def _config() -> StackedConfig:
    fallback = ConfigFile()
    fallback.set((b"http",), b"postBuffer", POST_BUFFER)
    backends: list[Any] = []
    env = env_config(os.environ)
    if env is not None:
        backends.append(env)
    backends += StackedConfig.default_backends()
    return StackedConfig([*backends, fallback])


def _flat(repo: Repo, commit: str | None) -> dict[str, tuple[int, ObjectID]]:
    """Every file of ``commit``'s tree: path -> (mode, blob id)."""
    if commit is None:
        return {}
    obj = repo[_oid(commit)]
    assert isinstance(obj, Commit)
    tree = obj.tree
    out = {}
    for entry in iter_tree_contents(repo.object_store, tree):
        assert entry.path is not None and entry.mode is not None and entry.sha is not None
        out[entry.path.decode("utf-8", "surrogateescape")] = (entry.mode, entry.sha)
    return out


def _owned(path: str, dirs: Mapping[str, Any]) -> bool:
    return any(d == "" or path == d or path.startswith(d + "/") for d in dirs)


class Repository:
    """One branch of one remote repository, through a local bare cache."""

    def __init__(self, url: str, branch: str, cache: Path, *, keep: bool = True) -> None:
        self.keep = keep
        """Whether the cache outlives the call (a failed push's commit stays in it)."""
        self.url = url
        self.branch = branch
        self.cache = cache
        self.shown = redact_url(url)
        self._ref = Ref(f"refs/heads/{branch}".encode())
        if not check_ref_format(self._ref):
            raise InputError(Problem("gitops.branch", f"{branch!r} is not a valid Git branch "
                                     "name (see git check-ref-format)"))
        self._origin = Ref(f"refs/remotes/origin/{branch}".encode())
        try:
            if (cache / "objects").is_dir():
                self.repo = Repo(str(cache))
            else:
                cache.mkdir(parents=True, exist_ok=True)
                self.repo = Repo.init_bare(str(cache))
        except (OSError, NotGitRepository) as exc:
            raise RemoteError(f"cannot open the local Git cache {cache}: {exc}") from None
        self.notes: list[str] = []
        self._follow_url()

    def _follow_url(self) -> None:
        """A cache that followed another repository (gitops.repo changed) forgets that
        repository's branch: commits never travel from one repository to another. The URL is
        kept as a hash (it may carry credentials)."""
        digest = hashlib.sha256(self.url.encode()).hexdigest().encode()
        config = self.repo.get_config()
        try:
            known = config.get((b"cloudctl",), b"urlhash")
        except KeyError:
            known = None
        if known == digest:
            return
        if known is not None and self._ref in self.repo.refs.as_dict():
            self.notes.append(f"the local clone {self.cache} followed another repository: "
                              f"its branch {self.branch} is dropped, {self.shown} is the base")
        for ref in (self._ref, self._origin):
            if ref in self.repo.refs.as_dict():
                del self.repo.refs[ref]
        config.set((b"cloudctl",), b"urlhash", digest)
        config.write_to_path()

    def close(self) -> None:
        self.repo.close()

    # ------------------------------------------------------------------ transport

    @contextmanager
    def _remote(self, operation: str) -> Iterator[tuple[GitClient, str]]:
        """A dulwich client for the URL; every failure becomes a RemoteError without
        credentials."""
        try:
            client, path = get_transport_and_path(self.url, config=_config(),
                                                  operation=operation, quiet=True)
        except (ValueError, KeyError) as exc:
            raise RemoteError(f"gitops.repo {self.shown}: not a Git URL or path "
                              f"({_scrub(str(exc), self.url)})") from None
        try:
            yield client, path
        except RemoteError:
            raise
        except NotGitRepository:
            raise RemoteError(f"gitops.repo {self.shown}: no Git repository there") from None
        except (GitProtocolError, HangupException, OSError) as exc:
            why = _scrub(str(exc) or type(exc).__name__, self.url)
            raise RemoteError(f"git {operation} {self.shown}: {why}") from None
        except Exception as exc:  # urllib3 and HTTP auth errors are not OSError subclasses
            if type(exc).__module__.split(".")[0] not in ("dulwich", "urllib3", "http"):
                raise
            why = _scrub(f"{type(exc).__name__}: {exc}", self.url)
            raise RemoteError(f"git {operation} {self.shown}: {why}") from None

    def fetch(self) -> str | None:
        """Fetch the branch into the cache; the remote's head (None: no such branch)."""
        with self._remote("fetch") as (client, path):
            store = self.repo.object_store

            def wants(refs: Mapping[Ref, ObjectID], depth: int | None = None
                      ) -> list[ObjectID]:
                sha = refs.get(self._ref)
                return [sha] if sha and sha not in store else []

            result = client.fetch(path, self.repo, determine_wants=wants,
                                  ref_prefix=[self._ref])
            head = result.refs.get(self._ref)
        if head is None:
            self.repo.refs.remove_if_equals(self._origin, None)
            return None
        self.repo.refs[self._origin] = head
        return head.decode()

    def _push(self, new: str, expected: str | None) -> None:
        want = _oid(new)

        def update(refs: Mapping[Ref, ObjectID]) -> dict[Ref, ObjectID]:
            current = refs.get(self._ref)
            if (current.decode() if current else None) != expected:
                raise RemoteError(
                    f"{self.shown} branch {self.branch} moved while committing (now "
                    f"{current.decode()[:12] if current else 'absent'}, fetched "
                    f"{expected[:12] if expected else 'absent'}); nothing was pushed: run again")
            return {self._ref: want}

        with self._remote("push") as (client, path):
            result = client.send_pack(
                path, update,  # type: ignore[arg-type]
                generate_pack_data=self.repo.generate_pack_data)  # type: ignore[arg-type]
            errors = {k: v for k, v in (result.ref_status or {}).items() if v}
        if errors:
            why = "; ".join(f"{k.decode()}: {v}" for k, v in errors.items())
            raise RemoteError(f"{self.shown} refused the push ({_scrub(why, self.url)}); "
                              "the remote branch is unchanged")
        self.repo.refs[self._origin] = want

    # ------------------------------------------------------------------ commit

    def _base(self, remote: str | None) -> tuple[str | None, list[str]]:
        """The commit to build on, and notes."""
        local_raw = self.repo.refs.as_dict().get(self._ref)
        local = local_raw.decode() if local_raw else None
        if local is None or local == remote:
            return remote, []
        if remote is None:
            return local, ["the remote branch does not exist: the local commits will create it"]
        if can_fast_forward(self.repo, _oid(remote), _oid(local)):
            return local, []  # unpushed local commits on top of the remote
        if can_fast_forward(self.repo, _oid(local), _oid(remote)):
            return remote, []  # the remote moved on: follow it
        return remote, [f"unpushed local commit {local[:12]} is superseded: the remote branch "
                        "moved, the new commit is built on its head"]

    def commit(
        self,
        content: Mapping[str, Mapping[str, bytes]],
        message: Callable[[ChangeSummary, bool], str],
        *,
        push: bool,
        dry_run: bool = False,
    ) -> Outcome:
        """Replace each owned directory (key of ``content``) of the branch with its files,
        commit when anything changed, push when asked (also earlier unpushed commits)."""
        remote = self.fetch()
        base, notes = self._base(remote)
        notes = self.notes + notes
        flat = _flat(self.repo, base)
        store = self.repo.object_store
        old = {p: store[sha].as_raw_string() for p, (_, sha) in flat.items()
               if _owned(p, content)}
        new: dict[str, bytes] = {}
        for d, files in content.items():
            for rel, data in files.items():
                new[f"{d}/{rel}" if d else rel] = data
        summary = summarize(old, new)
        blobs = {p: Blob.from_string(data) for p, data in new.items()}
        entries = {p: e for p, e in flat.items() if not _owned(p, content)}
        entries.update({p: (FILE_MODE, b.id) for p, b in blobs.items()})
        changed = entries != flat
        if dry_run:
            text = message(summary, base is None) if changed else None
            return Outcome(None, base, base, False, remote, summary, text, tuple(notes))
        commit_id = None
        text = None
        head = base
        if changed:
            for b in blobs.values():
                store.add_object(b)
            tree = commit_tree(store, [(p.encode("utf-8", "surrogateescape"), sha, mode)
                                       for p, (mode, sha) in sorted(entries.items())])
            text = message(summary, base is None)
            c = Commit()
            c.tree = tree
            c.parents = [_oid(base)] if base else []
            c.author = c.committer = AUTHOR
            c.author_time = c.commit_time = int(time.time())
            c.author_timezone = c.commit_timezone = 0
            c.encoding = b"UTF-8"
            c.message = text.encode()
            store.add_object(c)
            head = commit_id = c.id.decode()
        if head is not None:
            self.repo.refs[self._ref] = _oid(head)
        pushed = False
        if push and head is not None and head != remote:
            try:
                self._push(head, remote)
            except RemoteError as exc:
                if self.keep and commit_id is not None:
                    raise RemoteError(f"{exc.message} (commit {commit_id[:12]} is kept in "
                                      f"{self.cache}: a later push sends it)") from None
                raise
            pushed, remote = True, head
        return Outcome(commit_id, head, base, pushed, remote, summary, text, tuple(notes))


@contextmanager
def open_repository(url: str, branch: str, cache: Path | None) -> Iterator[Repository]:
    """A :class:`Repository` on ``cache`` (created when missing), or on a temporary cache."""
    if cache is not None:
        repo = Repository(url, branch, cache)
        try:
            yield repo
        finally:
            repo.close()
        return
    with tempfile.TemporaryDirectory(prefix="cloudctl-gitops-") as tmp:
        repo = Repository(url, branch, Path(tmp) / "cache.git", keep=False)
        try:
            yield repo
        finally:
            repo.close()
