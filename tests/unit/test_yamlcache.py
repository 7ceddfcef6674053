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
