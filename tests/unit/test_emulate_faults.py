"""The fault spec grammar of the emulated rack (``cloudctl emulate start --fault``)."""

from __future__ import annotations

import pytest

from cloudctl.emulate.faults import Fault, FaultSet, parse_fault, parse_faults_document
from cloudctl.emulate.rack import node_faults
from cloudctl.emulate.talos_node import Faults
from cloudctl.errors import InputError

NODES = ["cp1", "cp2", "worker1"]
RELEASES = ["cilium", "kube-ovn", "kubevirt"]


def test_release_fails_with_parameters() -> None:
    f = parse_fault("release-fails:cilium:times=2,reason=ChartPullFailed,message=boom")
    assert f == Fault("release-fails", "cilium",
                      (("message", "boom"), ("reason", "ChartPullFailed"), ("times", 2)))
    assert f.get("times") == 2
    assert f.spec == "release-fails:cilium:message=boom,reason=ChartPullFailed,times=2"
    assert parse_fault(f.spec) == f


def test_message_may_hold_colons_and_commas() -> None:
    f = parse_fault("release-fails:kube-ovn:message=timed out: a, b and c,times=3")
    assert f.get("message") == "timed out: a, b and c"
    assert f.get("times") == 3


def test_kinds_without_parameters_and_defaults() -> None:
    assert parse_fault("node-unreachable:cp1") == Fault("node-unreachable", "cp1")
    assert parse_fault("node-slow:cp2:seconds=0.5").get("seconds") == 0.5
    assert parse_fault("component-not-deployed:cdi").target == "cdi"


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("release-fails", "expected KIND:TARGET"),
        ("explode:cp1", "unknown kind 'explode'"),
        ("node-slow:", "no target"),
        ("node-slow:cp1:seconds=-1", "seconds must be a number of seconds > 0"),
        ("node-slow:cp1:seconds=fast", "seconds must be a number"),
        ("release-fails:cilium:times=0", "times must be a whole number >= 1"),
        ("release-fails:cilium:times=two", "times must be a whole number"),
        ("release-fails:cilium:reason=not a reason", "CamelCase condition reason"),
        ("release-fails:cilium:colour=red", "unknown parameter 'colour'"),
        ("node-unreachable:cp1:message=x", "parameters: none"),
        ("release-fails:cilium:times", "is not key=value"),
        ("release-fails:cilium:times=1,times=2", "given twice"),
        ("component-not-deployed:kamaji", "one of kubevirt, cdi"),
    ],
)
def test_bad_specs_name_the_spec(spec: str, needle: str) -> None:
    with pytest.raises(InputError) as exc:
        parse_fault(spec)
    assert exc.value.exit_code == 2
    assert repr(spec.strip()) in str(exc.value)
    assert needle in str(exc.value)


def test_targets_are_checked_against_inventory_and_platform() -> None:
    with pytest.raises(InputError) as exc:
        FaultSet.build(["node-unreachable:cp9", "release-fails:ciliumm"],
                       nodes=NODES, releases=RELEASES)
    text = str(exc.value)
    assert "'node-unreachable:cp9'" in text and "no node 'cp9' in the inventory" in text
    assert "no HelmRelease 'ciliumm' in the platform" in text
    with pytest.raises(InputError, match="also given as"):
        FaultSet.build(["node-slow:cp1", "node-slow:cp1:seconds=3"], nodes=NODES,
                       releases=RELEASES)


def test_faults_file() -> None:
    text = """
- {kind: release-fails, target: cilium, times: 2, message: "x: y, z"}
- kind: node-slow
  target: worker1
  seconds: 1.5
"""
    faults = parse_faults_document(text, source="faults.yaml")
    assert [f.spec for f in faults] == [
        "release-fails:cilium:message=x: y, z,times=2", "node-slow:worker1:seconds=1.5"]
    with pytest.raises(InputError) as exc:
        parse_faults_document("- {kind: release-fails, target: cilium, times: 0}\n- 3\n",
                              source="f.yaml")
    assert "f.yaml" in str(exc.value) and "[0]" in str(exc.value) and "[1]" in str(exc.value)
    with pytest.raises(InputError, match="must be a YAML list"):
        parse_faults_document("kind: node-slow\n", source="f.yaml")


def test_node_faults_map_onto_talos_emulator_faults() -> None:
    fs = FaultSet.build(
        ["node-unreachable:cp1", "node-slow:cp2:seconds=0.25", "apply-rejected:cp2:message=no",
         "upgrade-rollback:worker1", "release-fails:cilium"],
        nodes=NODES, releases=RELEASES)
    assert node_faults(fs) == {
        "cp1": Faults(unreachable=True),
        "cp2": Faults(slow=0.25, apply_fails="no"),
        "worker1": Faults(upgrade_rollback=True),
    }
    assert fs.specs() == sorted(fs.specs(), key=lambda s: tuple(s.split(":")[:2]))
