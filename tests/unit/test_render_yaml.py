"""The fast YAML path (render/files.py) writes exactly what libyaml writes, or steps aside."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudctl.inventory import parse_inventory
from cloudctl.inventory.synthetic import synthetic_inventory
from cloudctl.render import files as F
from cloudctl.render import render_all
from cloudctl.secrets import SecretsStore

ROOT = Path(__file__).resolve().parents[2]


def _check(obj: Any, *, roundtrip: bool = True) -> bool:
    """The fast output equals PyYAML's whenever there is one; True if the fast path took it."""
    fast = F._fast_dump(obj)
    if fast is not None:
        assert fast == F._dump(obj), obj
        if roundtrip:
            assert yaml.load(fast, Loader=yaml.CSafeLoader) == obj
    return fast is not None


def _documents(monkeypatch: pytest.MonkeyPatch, inv_text: str) -> list[Any]:
    seen: list[Any] = []
    real = F._fast_dump

    def spy(obj: Any) -> str | None:
        seen.append(obj)
        return real(obj)

    monkeypatch.setattr(F, "_fast_dump", spy)
    monkeypatch.setattr(F, "_YAML_CACHE", {})
    inv = parse_inventory(inv_text, "inventory.yaml").inventory
    bundle = SecretsStore(ROOT / "tests" / "golden" / "secrets" / "rack1").load()
    render_all(inv, bundle)
    monkeypatch.setattr(F, "_fast_dump", real)
    return seen


@pytest.mark.parametrize(
    ("talos", "kubernetes"),
    [("v1.11.3", "v1.34.1"), ("v1.12.7", "v1.35.4"), ("v1.13.6", "v1.35.4")],
)
def test_every_rendered_document(
    monkeypatch: pytest.MonkeyPatch, talos: str, kubernetes: str
) -> None:
    text = (ROOT / "inventory.example.yaml").read_text()
    docs = _documents(
        monkeypatch, text.replace("v1.13.6", talos).replace("v1.35.4", kubernetes)
    )
    synth = synthetic_inventory(20, talos_version=talos, kubernetes_version=kubernetes)
    docs += _documents(monkeypatch, yaml.safe_dump(synth, sort_keys=False))
    fast = sum(_check(d, roundtrip=False) for d in docs)
    assert fast > 0.9 * len(docs)  # the point of it: nearly everything takes the fast path


TRICKY = [
    "", " ", "a ", " a", "off", "On", "yes", "~", "null", "Null", "true", "1000", "0x1F", "0o7",
    "1_000", "1.5", ".5", "-1", "+1", "-.inf", ".nan", "1e3", "2001-12-14", "2001-12-14t21:59:43",
    "1:20", "=", "<<", "-", "--", "---", "--x", "- x", "-x", "...", "..x", ".x", "?", "?x", "? x",
    ":", ":x", "x:", "x: y", "x:y", "a #b", "a#b", "#a", "*a", "&a", "!a", "|", ">", "'a", '"a',
    "a'b", 'a"b', "%a", "@a", "`a", "[a", "a]", "{a", "a}", ",a", "a,b", "a, b", "a  b", "a\tb",
    "é", "a\nb", "a\n", "a\n\n", "\na", " a\nb", "a \nb", "a\n b", "a\n\nb\n", "a\nb ", "\x85",
    "\u2028", "x" * 1100, ("word " * 900).strip(), "$x", "^x", ";x", "(x)", "\\x", "/x", "_x",
    "mac(link.permanent_addr) == \"52:54:00:00:00:05\"", "10.40.0.1", "0.0.0.0/0", "null\n",
    "123\n", "true\nfalse", "y", "n", "NO", "a\r\nb",
]


def test_tricky_scalars() -> None:
    for s in TRICKY:
        for doc in ({"k": s}, {s: "v"} if s else {"k": s}, {"k": [s, {"a": s, "b": [s]}]}):
            _check(doc)
        _check({"k": {"n": {"m": [{"x": s, "y": {"z": s}}]}}})


_scalars = st.one_of(
    st.sampled_from(TRICKY),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12),
    st.text(alphabet=" \n:#-ab1.'\"", max_size=8),
    st.integers(-10**12, 10**12),
    st.booleans(),
    st.none(),
)
_keys = st.one_of(st.sampled_from(TRICKY[:40]), st.text(alphabet="ab:- #1.'", max_size=6))
_docs = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(_keys, children, max_size=4)
    ),
    max_leaves=25,
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_keys, _docs, min_size=1, max_size=5))
def test_generated_documents(doc: dict[Any, Any]) -> None:
    _check(doc)
