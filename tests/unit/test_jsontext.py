"""util.jsontext: the state files' JSON text round-trips and keeps one entry per line."""

from __future__ import annotations

import json

from cloudctl.pipeline.state import NodePhase, PipelineState
from cloudctl.util.jsontext import Encoded, entry_per_line


def test_round_trips_and_puts_each_entry_on_its_own_line() -> None:
    doc = {
        "b": [1, {"z": None, "a": "ü\n\"q\""}],
        "nodes": {"n2": {"y": 2, "x": 1}, "n1": {}},
        "empty": {},
        "a": 1.5,
    }
    text = entry_per_line(doc, ("nodes", "empty", "absent"))
    assert json.loads(text) == doc
    lines = text.splitlines()
    assert lines[0] == "{" and lines[-1] == "}" and text.endswith("}\n")
    assert lines[1:4] == ['  "a": 1.5,', '  "b": [1, {"a": "\\u00fc\\n\\"q\\"", "z": null}],',
                          '  "empty": {},']
    # sorted keys at both levels; one line per node, its keys sorted too
    assert [ln.strip().split(":")[0] for ln in lines[1:-1]] == [
        '"a"', '"b"', '"empty"', '"nodes"', '"n1"', '"n2"', "}"]
    assert '    "n2": {"x": 1, "y": 2}' in lines


def test_nested_key_holding_no_mapping_is_written_inline() -> None:
    assert json.loads(entry_per_line({"nodes": [1, 2]}, ("nodes",))) == {"nodes": [1, 2]}


def test_pipeline_state_text_is_stable_and_readable() -> None:
    st = PipelineState(cluster="rack1")
    st.node("cp1").phase = NodePhase.APPLIED
    st.stage("apply").plan.append("run   apply  send its machine config")
    text = st.to_json()
    assert PipelineState.from_json(text).to_json() == text
    assert '    "cp1": {' in text and '"phase": "applied"' in text and '"version": 2' in text


def test_encoded_values_are_written_as_they_are() -> None:
    text = entry_per_line({"nodes": {"a": Encoded('{"x": 1}'), "b": {"y": [2]}}}, ("nodes",))
    assert '    "a": {"x": 1},' in text.splitlines()
    assert json.loads(text) == {"nodes": {"a": {"x": 1}, "b": {"y": [2]}}}


def test_state_text_follows_every_node_change() -> None:
    """Node lines are reused between saves; a changed field still shows in the next one."""
    st = PipelineState(cluster="rack1")
    for name in ("cp1", "cp2"):
        st.node(name)
    before = json.loads(st.to_json())["nodes"]
    st.node("cp2").phase = NodePhase.APPLIED
    st.node("cp2").error = "boom"
    after = json.loads(st.to_json())["nodes"]
    assert after["cp1"] == before["cp1"] and after["cp2"]["phase"] == "applied"
    assert after["cp2"]["error"] == "boom" and before["cp2"]["error"] is None
