"""cloudctl.talos_schema: machine configs checked against the vendored Talos JSON schemas."""

from __future__ import annotations

import json

import jsonschema
import pytest

from cloudctl import resources
from cloudctl.errors import InputError, RenderError
from cloudctl.talos_schema import (
    known_kinds,
    split_documents,
    supported_minors,
    talos_minor,
    validate_config,
)

MINORS = ["1.11", "1.12", "1.13"]

WORKER = """\
version: v1alpha1
machine:
  type: worker
  kubelet:
    image: ghcr.io/siderolabs/kubelet:v1.34.1
  kernel:
    modules:
      - name: drbd
        parameters: [usermode_helper=disabled]
cluster:
  controlPlane:
    endpoint: https://10.0.0.10:6443
"""

HOSTNAME_DOC = """\
---
apiVersion: v1alpha1
kind: HostnameConfig
hostname: node1
"""


def test_supported_minors_are_the_vendored_schemas() -> None:
    assert supported_minors() == MINORS


@pytest.mark.parametrize("minor", MINORS)
def test_vendored_schema_is_a_valid_closed_2020_12_schema(minor: str) -> None:
    schema = json.loads(resources.read_text("talos", f"schemas/config.schema.v{minor}.json"))
    jsonschema.Draft202012Validator.check_schema(schema)
    open_defs = [
        name
        for name, d in schema["$defs"].items()
        if "properties" in d and d.get("additionalProperties") is not False
    ]
    assert open_defs == []


@pytest.mark.parametrize("minor", MINORS)
def test_minimal_worker_is_valid(minor: str) -> None:
    assert validate_config(WORKER, f"v{minor}.0") == []


def test_version_forms() -> None:
    assert talos_minor("v1.12.3") == "1.12"
    assert talos_minor("1.13") == "1.13"
    assert talos_minor("v1.11.0-beta.1") == "1.11"
    with pytest.raises(RenderError, match="not a Talos version"):
        talos_minor("latest")
    with pytest.raises(RenderError, match=r"no vendored Talos config schema for v1\.9"):
        validate_config(WORKER, "v1.9.0")


@pytest.mark.parametrize("minor", MINORS)
def test_unknown_key_is_rejected_with_its_path(minor: str) -> None:
    text = WORKER.replace("  kubelet:\n", "  kubelet:\n    maxPods: 512\n")
    problems = validate_config(text, minor)
    assert problems == ["document 1 (v1alpha1): machine.kubelet.maxPods: unknown field"]


def test_unknown_top_level_key_and_several_unknown_keys() -> None:
    extra = "  type: worker\n  a: 1\n  b: 2\n"
    text = "flavour: vanilla\n" + WORKER.replace("  type: worker\n", extra)
    problems = validate_config(text, "1.13")
    assert "document 1 (v1alpha1): flavour: unknown field" in problems
    assert "document 1 (v1alpha1): machine.a: unknown field (also unknown: b)" in problems


def test_unknown_key_in_a_typed_document() -> None:
    text = WORKER + HOSTNAME_DOC + "domain: example.org\n"
    assert validate_config(text, "1.12") == [
        "document 2 (HostnameConfig): domain: unknown field"
    ]


def test_wrong_type_is_rejected_with_its_path() -> None:
    text = WORKER.replace("- name: drbd", "- name: 42")
    assert validate_config(text, "1.12") == [
        "document 1 (v1alpha1): machine.kernel.modules[0].name: wrong type: "
        "expected string, got 42"
    ]


def test_enum_violation_names_the_allowed_values() -> None:
    text = WORKER.replace("type: worker", "type: master")
    (problem,) = validate_config(text, "1.11")
    assert problem.startswith("document 1 (v1alpha1): machine.type: 'master' is not one of")
    assert "controlplane" in problem


def test_field_removed_in_a_later_minor_is_unknown_there() -> None:
    time = "  type: worker\n  time:\n    servers: [pool.ntp.org]\n"
    text = WORKER.replace("  type: worker\n", time)
    assert validate_config(text, "1.11") == []
    assert validate_config(text, "1.12") == ["document 1 (v1alpha1): machine.time: unknown field"]


def test_document_kind_unknown_to_the_minor() -> None:
    text = WORKER + HOSTNAME_DOC
    assert validate_config(text, "1.12") == []
    assert validate_config(text, "1.11") == [
        "document 2 (HostnameConfig): unknown document apiVersion='v1alpha1' "
        "kind='HostnameConfig' for Talos v1.11"
    ]
    assert "HostnameConfig" in known_kinds("v1.12.0")
    assert "HostnameConfig" not in known_kinds("v1.11.5")


def test_typed_document_missing_required_field() -> None:
    text = WORKER + "---\napiVersion: v1alpha1\nkind: Layer2VIPConfig\nlink: bond0\n"
    assert validate_config(text, "1.13") == [
        "document 2 (Layer2VIPConfig): (document root): 'name' is a required property"
    ]


def test_document_without_version_or_kind() -> None:
    assert validate_config("machine: {}\n", "1.12") == [
        "document 1 (?): neither 'apiVersion'/'kind' nor 'version: v1alpha1' is set"
    ]


def test_duplicate_yaml_key_is_rejected_like_go_yaml() -> None:
    text = WORKER.replace("  type: worker\n", "  type: worker\n  type: controlplane\n")
    (problem,) = validate_config(text, "1.12")
    assert "duplicate key 'type'" in problem and "line 4" in problem


def test_duplicate_documents_are_rejected() -> None:
    text = WORKER + HOSTNAME_DOC + HOSTNAME_DOC
    assert validate_config(text, "1.13") == [
        "document 3 (HostnameConfig): duplicate of document 2"
    ]
    named = "---\napiVersion: v1alpha1\nkind: LinkConfig\nname: {}\n"
    assert validate_config(WORKER + named.format("net0") + named.format("net1"), "1.13") == []


def test_v1alpha1_fields_moved_to_documents_are_unknown_from_1_12() -> None:
    text = WORKER.replace("  type: worker\n", "  type: worker\n  network:\n    hostname: n1\n")
    assert validate_config(text, "1.11") == []
    assert validate_config(text + HOSTNAME_DOC, "1.12") == [
        "document 1 (v1alpha1): machine.network.hostname: unknown field"
    ]


def test_deprecated_persist_is_accepted_as_talos_does() -> None:
    assert validate_config("persist: true\n" + WORKER, "1.13") == []
    assert validate_config("persist: yes please\n" + WORKER, "1.13") == [
        "document 1 (v1alpha1): persist: wrong type: expected boolean, got 'yes please'"
    ]


def test_split_documents() -> None:
    docs = split_documents("---\n" + WORKER + HOSTNAME_DOC + "---\n")
    assert [d.get("kind", d.get("version")) for d in docs] == ["v1alpha1", "HostnameConfig"]
    with pytest.raises(InputError, match="document 2: must be a mapping, got list"):
        split_documents(WORKER + "---\n- a\n")
    with pytest.raises(InputError, match="invalid YAML"):
        split_documents("machine: [\n")
    assert validate_config("", "1.12") == ["machine config is empty"]
    assert validate_config("a: [", "1.12")[0].startswith("machine config (line")
