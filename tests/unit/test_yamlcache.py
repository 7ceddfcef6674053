"""The parsed-YAML cache: same documents as parsing, keyed by content, never a source."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cloudctl.resources import read_text
from cloudctl.util import yamlcache


def test_cached_documents_equal_a_fresh_parse(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("CLOUDCTL_YAML_CACHE", raising=False)
    text = read_text("flux", "vendor/capi/v1.14.0/cluster.x-k8s.io_clusters.yaml")
    want = [d for d in yaml.safe_load_all(text) if d is not None]
    first = yamlcache.load_documents(text)  # parsed, then written
    entries = list((tmp_path / "cloudctl" / "yaml").glob("*.json"))
    assert len(entries) == 1
    second = yamlcache.load_documents(text)  # read back
    assert first == want and second == want
    second[0]["kind"] = "changed"  # a fresh copy: callers may mutate
    assert yamlcache.load_documents(text) == want
    # an edited text is another entry; a corrupt entry is parsed again, not trusted
    entries[0].write_text("{not json")
    assert yamlcache.load_documents(text) == want
    edited = text.replace("Cluster is the Schema", "Cluster (edited) is the Schema", 1)
    assert edited != text
    assert yamlcache.load_documents(edited)[0] != want[0]


def test_cache_can_be_off_or_unwritable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = read_text("flux", "vendor/capi/v1.14.0/cluster.x-k8s.io_machines.yaml")
    want = [d for d in yaml.safe_load_all(text) if d is not None]
    monkeypatch.setenv("CLOUDCTL_YAML_CACHE", "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert yamlcache.load_documents(text) == want
    assert not (tmp_path / "cloudctl").exists()
    monkeypatch.delenv("CLOUDCTL_YAML_CACHE")
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # a file where the directory would be
    assert yamlcache.load_documents(text) == want


def test_cached_dump_is_the_dump_keyed_by_document_and_dumper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rendered text of a large document is the dumper's text from the first render on;
    a changed document or a changed dumper is a new entry, a damaged entry is not trusted."""
    import json

    from cloudctl.render import files

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("CLOUDCTL_YAML_CACHE", raising=False)
    text = read_text("flux", "vendor/capi/v1.14.0/cluster.x-k8s.io_clusters.yaml")
    doc = yaml.safe_load(text)
    key = json.dumps(doc, ensure_ascii=False)
    assert len(key) >= 64 * 1024
    want = files._dump_any(doc)
    calls: list[int] = []

    def dump() -> str:
        calls.append(1)
        return want

    assert yamlcache.cached_dump(key, "dumper-1", dump) == want
    assert yamlcache.cached_dump(key, "dumper-1", dump) == want
    assert len(calls) == 1  # the second came from the cache
    assert yamlcache.cached_dump(key, "dumper-2", dump) == want
    assert len(calls) == 2  # another dumper: not the first one's entry
    entries = sorted((tmp_path / "cloudctl" / "yaml").glob("dump-*.yaml"))
    assert len(entries) == 2
    for entry in entries:  # damaged: dumped again
        entry.write_bytes(entry.read_bytes()[:-10])
    assert yamlcache.cached_dump(key, "dumper-1", dump) == want
    assert len(calls) == 3
    assert yamlcache.cached_dump(key, "dumper-1", dump) == want
    assert len(calls) == 3  # and rewritten whole
    # to_yaml goes through it with this module's identity, and gives the dumper's text
    files._YAML_CACHE.clear()
    assert files.to_yaml(doc) == want
    assert yaml.safe_load(want) == doc
    # small documents are not cached
    assert yamlcache.cached_dump("{}", "dumper-1", lambda: "{}\n") == "{}\n"
    assert len(list((tmp_path / "cloudctl" / "yaml").glob("dump-*.yaml"))) == 3
