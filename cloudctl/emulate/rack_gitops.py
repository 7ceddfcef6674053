"""The emulated rack's source- and kustomize-controller for local Git repositories.

For each Flux ``Kustomization`` whose ``sourceRef`` is a ``GitRepository`` with a ``file://``
URL or an ``http(s)://`` URL on a loopback address (mirrored with ``git fetch`` into a cache,
at most every ``fetch_interval`` seconds), read the repository at the branch head (git CLI,
nothing is checked out), follow
``kustomization.yaml`` ``resources:`` from ``spec.path`` (directories and files, in order)
and server-side apply every object into the Kubernetes API emulator with the field manager
``kustomize-controller`` — what Flux would do. A revision is recorded as applied only when
every object was accepted; otherwise it is retried on the next pass (CRDs becoming
Established, a namespace not there yet). Other URLs are left alone (the emulator never
reaches beyond loopback). Flux's CRD only admits http/https/ssh URLs, so a lab serves its
repository over HTTP on loopback (``git http-backend``).

With ``spec.prune: true`` (Flux's garbage collection) the objects a Kustomization applied at
its previous revision and no longer has are deleted once the new revision is applied, and all
of its objects when the Kustomization itself is deleted (Flux's finalizer); objects annotated
``kustomize.toolkit.fluxcd.io/prune: disabled`` are kept. The inventory of what each applied
lives in this controller (Flux keeps it in ``status.inventory``), so it starts empty with the
rack.

Not done: kustomize patches/generators/images (cloudctl's tree uses plain ``resources:``),
health checks (the emulator's own Kustomization reconciler sets Ready).

:class:`GitChartLocator` is the emulated source-controller's chart artifact for the emulated
helm-controller (:mod:`cloudctl.emulate.kube_helm`): a HelmRelease chart at a path of a local
``GitRepository`` is exported (``git archive``) from the branch head into a cache directory
keyed by commit and path, which ``helm template`` then renders. It keeps its own mirrors (it
runs inside the API emulator's reconcile pass, while the Kustomization reconciler runs in the
rack's loop).
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import math
import os
import posixpath
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import yaml

from ..kube.objects import order_for_apply
from .kube_api import KubeApiEmulator
from .kube_helm import ChartUnavailable

MANAGER = "kustomize-controller"


class GitError(Exception):
    pass


def _git(repo: str, *args: str) -> bytes:
    try:
        return subprocess.run(["git", "--git-dir", repo, *args], capture_output=True,
                              check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise GitError(f"git {' '.join(args)} in {repo}: {exc}") from None


def head(repo: str, branch: str) -> str | None:
    try:
        return _git(repo, "rev-parse", "--verify", "-q", f"refs/heads/{branch}").decode().strip()
    except GitError:
        return None


def _refs_key(repo: str, branch: str) -> tuple[int, ...]:
    """What a branch's ref files look like on disk: (inode, mtime, size) of the loose ref and
    of packed-refs (zeros when absent). Git and dulwich replace a ref file by renaming, so a
    moved branch always shows here."""
    out: list[int] = []
    for path in (os.path.join(repo, "refs", "heads", branch), os.path.join(repo, "packed-refs"),
                 os.path.join(repo, ".git", "refs", "heads", branch),
                 os.path.join(repo, ".git", "packed-refs")):
        try:
            st = os.stat(path)
            out += [st.st_ino, st.st_mtime_ns, st.st_size]
        except OSError:
            out += [0, 0, 0]
    return tuple(out)


def _is_dir(repo: str, rev: str, path: str) -> bool:
    try:
        return _git(repo, "cat-file", "-t", f"{rev}:{path}").strip() == b"tree"
    except GitError:
        return False


def read_objects(repo: str, rev: str, path: str) -> list[dict[str, Any]]:
    """Objects of the kustomize directory ``path`` at ``rev`` (``resources:`` in order)."""
    path = posixpath.normpath(path.lstrip("./") or ".")
    kust = yaml.safe_load(_git(repo, "show", f"{rev}:{path}/kustomization.yaml")) or {}
    out: list[dict[str, Any]] = []
    for res in kust.get("resources") or []:
        sub = posixpath.normpath(posixpath.join(path, str(res)))
        if _is_dir(repo, rev, sub):
            out += read_objects(repo, rev, sub)
        else:
            out += [d for d in yaml.safe_load_all(_git(repo, "show", f"{rev}:{sub}"))
                    if isinstance(d, dict)]
    return out


def _item_path(emu: KubeApiEmulator, obj: Mapping[str, Any]) -> str | None:
    rt = emu.store.type_of(str(obj.get("apiVersion")), str(obj.get("kind")))
    if rt is None:
        return None
    base = f"/apis/{rt.api_version}" if rt.group else f"/api/{rt.version}"
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace") or "default"
    where = f"/namespaces/{quote(ns, safe='')}" if rt.namespaced else ""
    return f"{base}{where}/{rt.plural}/{quote(str(meta.get('name')), safe='')}"


def is_loopback(host: str | None) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


class FileGitKustomizeController:
    def __init__(self, emu: KubeApiEmulator, cache: Path, *, fetch_interval: float = 0.5) -> None:
        self.emu = emu
        self.cache = cache
        self.fetch_interval = fetch_interval
        self._fetched: dict[str, float] = {}
        self.applied: dict[str, str] = {}
        """Kustomization namespace/name -> last revision fully applied."""
        self.errors: dict[str, str] = {}
        self.objects_applied = 0
        self.inventory: dict[str, dict[tuple[str, str, str, str], bool]] = {}
        """Kustomization namespace/name -> (apiVersion, kind, namespace, name) of each object
        applied -> whether it may be pruned; with ``prune`` on (Flux's garbage collection)."""
        self.objects_pruned = 0
        self._heads: dict[tuple[str, str], tuple[tuple[int, ...], str | None]] = {}
        """(repo, branch) -> (what the ref files looked like, the branch head then)."""

    def _head(self, repo: str, branch: str) -> str | None:
        """The branch head, asking git only when the repository's ref files changed (a commit
        replaces the loose ref file or rewrites packed-refs): an idle rack runs no git."""
        key = _refs_key(repo, branch)
        cached = self._heads.get((repo, branch))
        if cached is not None and cached[0] == key:
            return cached[1]
        rev = head(repo, branch)
        self._heads[(repo, branch)] = (key, rev)
        return rev

    def fingerprint(self) -> tuple[tuple[int, ...], ...]:
        """Changes when a watched repository's refs change (a commit was pushed)."""
        return tuple(_refs_key(repo, branch) for repo, branch in sorted(self._heads))

    def next_due(self) -> float:
        """When a remote (loopback HTTP) source is fetched again; inf when there is none."""
        return min((at + self.fetch_interval for at in self._fetched.values()),
                    default=math.inf)

    def apply(self, obj: Mapping[str, Any]) -> str | None:
        target = _item_path(self.emu, obj)
        if target is None:
            return f"{obj.get('apiVersion')} {obj.get('kind')} is not served (yet)"
        headers = {"content-type": "application/apply-patch+yaml",
                   "user-agent": f"{MANAGER}/emulated"}
        resp = self.emu.handle("PATCH", f"{target}?fieldManager={MANAGER}&force=true", headers,
                               json.dumps(obj).encode())
        if resp.code >= 300:
            return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}: " \
                   f"{resp.code} {resp.body[:200].decode(errors='replace')}"
        self.objects_applied += 1
        return None

    def local_repo(self, url_text: str, key: str) -> str | None:
        """A git dir holding the URL's branches (the repo itself for file://), or None."""
        url = urlsplit(url_text)
        if url.scheme == "file":
            return url.path
        if url.scheme not in ("http", "https") or not is_loopback(url.hostname):
            return None
        mirror = self.cache / hashlib.sha256(url_text.encode()).hexdigest()[:16]
        now = time.monotonic()
        if now - self._fetched.get(url_text, -1e9) < self.fetch_interval:
            return str(mirror) if mirror.is_dir() else None
        self._fetched[url_text] = now
        try:
            if not mirror.is_dir():
                subprocess.run(["git", "init", "-q", "--bare", str(mirror)], check=True,
                               capture_output=True, timeout=30)
            _git(str(mirror), "fetch", "-q", "--prune", url_text, "+refs/heads/*:refs/heads/*")
        except (GitError, OSError, subprocess.SubprocessError) as exc:
            self.errors[key] = str(exc)
            return None
        return str(mirror)

    def _prune(self, entries: list[tuple[str, str, str, str]]) -> None:
        """Delete objects (owners last: the reverse of apply order)."""
        for api_version, kind, ns, name in reversed(entries):
            obj = {"apiVersion": api_version, "kind": kind,
                   "metadata": {"name": name, "namespace": ns or None}}
            target = _item_path(self.emu, obj)
            if target is None:
                continue
            resp = self.emu.handle("DELETE", target, {"user-agent": f"{MANAGER}/emulated"}, b"")
            if resp.code < 300:
                self.objects_pruned += 1

    def reconcile(self) -> None:
        present = set()
        for ks in self.emu.list("kustomize.toolkit.fluxcd.io/v1", "Kustomization"):
            present.add(f"{ks['metadata'].get('namespace')}/{ks['metadata']['name']}")
        for gone in [k for k in self.inventory if k not in present]:
            # a deleted Kustomization with prune on: Flux's finalizer deletes what it applied
            self._prune([e for e, prunable in self.inventory.pop(gone).items() if prunable])
        for ks in self.emu.list("kustomize.toolkit.fluxcd.io/v1", "Kustomization"):
            meta, spec = ks["metadata"], ks.get("spec") or {}
            ref = spec.get("sourceRef") or {}
            if ref.get("kind", "GitRepository") != "GitRepository" or spec.get("suspend"):
                continue
            ns = ref.get("namespace") or meta.get("namespace")
            src = self.emu.get("source.toolkit.fluxcd.io/v1", "GitRepository",
                               str(ref.get("name", "")), ns)
            if src is None:
                continue
            branch = ((src.get("spec") or {}).get("ref") or {}).get("branch", "main")
            key = f"{meta.get('namespace')}/{meta['name']}"
            repo = self.local_repo(str((src.get("spec") or {}).get("url", "")), key)
            if repo is None:
                continue
            rev = self._head(repo, branch)
            if rev is None or self.applied.get(key) == rev:
                continue
            try:
                objs = read_objects(repo, rev, str(spec.get("path") or "."))
            except (GitError, yaml.YAMLError) as exc:
                self.errors[key] = str(exc)
                continue
            ordered = order_for_apply(objs)
            problems = [p for p in (self.apply(o) for o in ordered) if p]
            if problems:
                self.errors[key] = "; ".join(problems[:3])
                continue
            self.applied[key] = rev
            self.errors.pop(key, None)
            if not spec.get("prune"):
                self.inventory.pop(key, None)
                continue
            now: dict[tuple[str, str, str, str], bool] = {}
            for o in ordered:
                meta = o.get("metadata") or {}
                annotations = meta.get("annotations") or {}
                rt = self.emu.store.type_of(str(o.get("apiVersion")), str(o.get("kind")))
                ns = str(meta.get("namespace") or "default") if rt and rt.namespaced else ""
                now[(str(o.get("apiVersion")), str(o.get("kind")), ns, str(meta.get("name")))] \
                    = annotations.get("kustomize.toolkit.fluxcd.io/prune") != "disabled"
            before = self.inventory.get(key, {})
            self._prune([e for e, prunable in before.items() if prunable and e not in now])
            self.inventory[key] = now


class GitChartLocator:
    """(GitRepository object, chart path) -> a local copy of the chart at the branch head."""

    def __init__(self, cache: Path, *, fetch_interval: float = 0.5) -> None:
        self.cache = cache
        self.fetch_interval = fetch_interval
        self._fetched: dict[str, float] = {}
        self._lock = threading.Lock()

    def _repo(self, url_text: str) -> str | None:
        url = urlsplit(url_text)
        if url.scheme == "file":
            return url.path
        if url.scheme not in ("http", "https") or not is_loopback(url.hostname):
            return None
        mirror = self.cache / "mirrors" / hashlib.sha256(url_text.encode()).hexdigest()[:16]
        now = time.monotonic()
        if mirror.is_dir() and now - self._fetched.get(url_text, -1e9) < self.fetch_interval:
            return str(mirror)
        try:
            if not mirror.is_dir():
                mirror.parent.mkdir(parents=True, exist_ok=True)
                subprocess.run(["git", "init", "-q", "--bare", str(mirror)], check=True,
                               capture_output=True, timeout=30)
            _git(str(mirror), "fetch", "-q", "--prune", url_text, "+refs/heads/*:refs/heads/*")
        except (GitError, OSError, subprocess.SubprocessError) as exc:
            raise ChartUnavailable(f"failed to fetch {url_text}: {exc}") from None
        self._fetched[url_text] = now
        return str(mirror)

    def __call__(self, source: Mapping[str, Any], chart_path: str) -> Path | None:
        if source.get("kind") != "GitRepository":
            return None
        spec = source.get("spec") or {}
        url = str(spec.get("url") or "")
        branch = str((spec.get("ref") or {}).get("branch") or "main")
        with self._lock:
            repo = self._repo(url)
            if repo is None:
                return None
            rev = head(repo, branch)
            if rev is None:
                raise ChartUnavailable(f"no branch '{branch}' in {url}")
            path = posixpath.normpath(chart_path or ".").lstrip("/")
            if path == ".." or path.startswith("../"):
                raise ChartUnavailable(f"chart path '{chart_path}' leaves the repository")
            if not _is_dir(repo, rev, path):
                raise ChartUnavailable(
                    f"chart path '{chart_path}' not found in revision '{branch}@sha1:{rev}'"
                )
            dest = self.cache / "charts" / rev / path
            if not dest.is_dir():
                self._export(repo, rev, path, dest)
            return dest

    @staticmethod
    def _export(repo: str, rev: str, path: str, dest: Path) -> None:
        try:
            data = _git(repo, "archive", "--format=tar", f"{rev}:{path}" if path != "." else rev)
        except GitError as exc:
            raise ChartUnavailable(str(exc)) from None
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=dest.parent))
        try:
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                for member in tar.getmembers():
                    name = posixpath.normpath(member.name)
                    if name.startswith(("/", "../")) or name == ".." or not (
                        member.isfile() or member.isdir()
                    ):
                        continue  # only plain files and directories inside the chart
                    if hasattr(tarfile, "data_filter"):
                        tar.extract(member, tmp, filter="data")
                    else:  # Python < 3.11.4: the checks above stand in for the filter
                        tar.extract(member, tmp)
            tmp.rename(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
