"""Parsed vendored YAML, cached as JSON between runs.

The vendored upstream data (CRDs of several hundred KB each, the Flux install manifest) takes
a YAML parser ~50 ms per MB even with libyaml; JSON parses the same documents about ten times
faster. :func:`load_documents` parses a text once and keeps the result under
``$XDG_CACHE_HOME/cloudctl/yaml/<sha256 of the text>.json`` (``~/.cache`` by default), so later
processes read JSON. The key is the content hash: an edited file is a new entry, never a stale
one. Anything that goes wrong with the cache (read-only home, a corrupt entry) falls back to
parsing; the cache is an optimisation, never a source.

The other direction is cached the same way: :func:`cached_dump` keeps the YAML text a
renderer wrote for a large document (the vendored operator manifests re-emitted into the GitOps
tree, ~1 MB together, ~0.35 s through libyaml's emitter on every render) under
``dump-<sha256 of the document's JSON and of the dumper>.yaml``.

``CLOUDCTL_YAML_CACHE=off`` disables both.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

__all__ = ["SAFE_LOADER", "cache_dir", "cached_dump", "load_documents", "safe_load"]

SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""PyYAML's safe loader on libyaml where PyYAML has it (the one place this is chosen)."""
_MIN_SIZE = 64 * 1024
"""Texts smaller than this are parsed directly (the cache would not pay off)."""


def safe_load(text: str | bytes) -> Any:
    """``yaml.safe_load`` through libyaml where PyYAML has it (the same documents, several
    times faster): for the data files read on every run (catalogs, presets, the bundle)."""
    return yaml.load(text, Loader=SAFE_LOADER)


def cache_dir() -> Path | None:
    if os.environ.get("CLOUDCTL_YAML_CACHE", "").lower() in ("off", "0", "no"):
        return None
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cloudctl" / "yaml"


def _parse(text: str) -> list[Any]:
    return [d for d in yaml.load_all(text, Loader=SAFE_LOADER) if d is not None]


def load_documents(text: str) -> list[Any]:
    """The non-empty YAML documents of ``text`` (a fresh copy on every call)."""
    directory = cache_dir()
    if directory is None or len(text) < _MIN_SIZE:
        return _parse(text)
    path = directory / f"{hashlib.sha256(text.encode()).hexdigest()}.json"
    try:
        docs = json.loads(path.read_bytes())
        if isinstance(docs, list):
            return docs
    except (OSError, ValueError):
        pass
    docs = _parse(text)
    try:
        data = json.dumps(docs, separators=(",", ":")).encode()
    except (TypeError, ValueError):  # a value JSON cannot hold (dates): keep parsing YAML
        return docs
    _store(directory, path, data)
    return docs


def cached_dump(key: str, dumper_id: str, dump: Callable[[], str]) -> str:
    """``dump()``, remembered between runs for documents whose JSON form ``key`` is large.

    ``dumper_id`` names the dumping code and its settings (a change to either must change it):
    the entry's name is the hash of both, so a new document or a new dumper is a new entry."""
    if len(key) < _MIN_SIZE:
        return dump()
    directory = cache_dir()
    if directory is None:
        return dump()
    digest = hashlib.sha256(dumper_id.encode())
    digest.update(key.encode())
    path = directory / f"dump-{digest.hexdigest()}.yaml"
    try:  # "<sha256 of the text>\n<text>": a damaged entry is dumped again, not trusted
        check, _, data = path.read_bytes().partition(b"\n")
        if hashlib.sha256(data).hexdigest().encode() == check:
            return data.decode()
    except (OSError, UnicodeDecodeError):
        pass
    text = dump()
    data = text.encode()
    _store(directory, path, hashlib.sha256(data).hexdigest().encode() + b"\n" + data)
    return text


def _store(directory: Path, path: Path, data: bytes) -> None:
    """Write one entry atomically; a cache that cannot be written is skipped."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except OSError:
            os.unlink(tmp)
            raise
    except OSError:
        pass
