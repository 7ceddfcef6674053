"""The compiled Talos schema check agrees with jsonschema; the forked bundle load behaves like
a direct call."""

from __future__ import annotations

import copy
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from cloudctl import talos_schema as ts
from cloudctl.errors import SecretsError
from cloudctl.inventory import parse_inventory
from cloudctl.render import render_all
from cloudctl.render.forked import start
from cloudctl.render.machineconfig import node_documents
from cloudctl.secrets import SecretsStore

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "tests" / "golden" / "secrets" / "rack1"
VERSIONS = [("v1.11.3", "v1.34.1"), ("v1.12.7", "v1.35.4"), ("v1.13.6", "v1.35.4")]


def _docs(talos: str, kubernetes: str) -> list[dict[str, Any]]:
    text = (ROOT / "inventory.example.yaml").read_text()
    inv = parse_inventory(
        text.replace("v1.13.6", talos).replace("v1.35.4", kubernetes), "inventory.yaml"
    ).inventory
    bundle = SecretsStore(BUNDLE).load()
    return [d for n in inv.nodes for d in node_documents(inv, bundle, n)]


def _mutations(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Broken copies: an unknown key, wrong types, an enum or pattern violation, nested."""
    out = []
    paths: list[list[str]] = [[]]
    node: Any = doc
    for key in list(doc)[:6]:
        paths.append([key])
        node = doc[key]
        if isinstance(node, dict):
            paths += [[key, k] for k in list(node)[:6]]
    for path in paths:
        for value in ("zzz-not-valid", 12345, True, None, [1], {"x": 1}, "", 1.5):
            d = copy.deepcopy(doc)
            target = d
            for p in path[:-1]:
                target = target[p]
            if path:
                target[path[-1]] = value
            else:
                d["unknownField"] = value
            out.append(d)
    return out


@pytest.mark.parametrize(("talos", "kubernetes"), VERSIONS)
def test_fast_check_agrees_with_jsonschema(talos: str, kubernetes: str) -> None:
    minor = ts.talos_minor(talos)
    checked = 0
    for doc in _docs(talos, kubernetes):
        key = ("v1alpha1", "") if "kind" not in doc else (doc["apiVersion"], doc["kind"])
        definition = ts._branches(minor)[key]
        check = ts._fast_check(minor, definition)
        assert check is not None, definition  # every rendered kind has a compiled check
        for d in [doc, *_mutations(doc)]:
            expected = not any(True for _ in ts._validator(minor, definition).iter_errors(d))
            try:
                got = check(d)
            except ts._Unsure:
                continue
            assert got == expected, (definition, d)
            checked += 1
    assert checked > 100


def test_invalid_document_still_named_by_jsonschema() -> None:
    doc = {"apiVersion": "v1alpha1", "kind": "HostnameConfig", "hostname": "a", "bogus": 1}
    problems = ts.validate_documents([doc], "v1.13.6")
    assert problems == ["document 1 (HostnameConfig): bogus: unknown field"]


def test_forked_result_error_and_fallback() -> None:
    if threading.active_count() == 1:  # a thread left by an earlier test: see the test below
        assert start(lambda: {"pid": os.getpid()})()["pid"] != os.getpid()

    def refused() -> None:
        raise SecretsError("no bundle here")

    with pytest.raises(SecretsError, match="no bundle here"):
        start(refused)()

    calls: list[int] = []

    def bug() -> None:
        calls.append(os.getpid())
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        start(bug)()
    assert calls == [os.getpid()]  # re-run here, so the traceback is a real one


def test_forked_runs_here_while_other_threads_run() -> None:
    """A forked child of a threaded process could inherit a lock held by another thread
    (the import lock, a logging lock) and hang: with threads running, fn runs here."""
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        assert start(lambda: {"pid": os.getpid()})()["pid"] == os.getpid()
    finally:
        release.set()
        other.join()


def test_render_all_with_loader_equals_render_all_with_bundle(tmp_path: Path) -> None:
    inv = parse_inventory((ROOT / "inventory.example.yaml").read_text(), "i.yaml").inventory
    store = SecretsStore(BUNDLE)
    direct = render_all(inv, store.load())
    assert render_all(inv, store.load) == direct
    missing = SecretsStore(tmp_path / "none")
    with pytest.raises(SecretsError):
        render_all(inv, missing.load)


def test_forked_machine_configs_equal_inline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rack big enough for the forked machine-config render gives the same files as the
    inline render, and a missing bundle is still the error raised."""
    import yaml

    import cloudctl.render as render
    from cloudctl.inventory.synthetic import synthetic_inventory

    text = yaml.safe_dump(synthetic_inventory(render.FORK_FROM_NODES + 3), sort_keys=False)
    inv = parse_inventory(text, "synthetic.yaml").inventory
    assert len(inv.nodes) >= render.FORK_FROM_NODES
    store = SecretsStore(BUNDLE)
    forked = render_all(inv, store.load)
    monkeypatch.setattr(render, "FORK_FROM_NODES", 10**6)
    assert render_all(inv, store.load) == forked
    monkeypatch.undo()
    with pytest.raises(SecretsError, match="no secrets bundle"):
        render_all(inv, SecretsStore(tmp_path / "none").load)
