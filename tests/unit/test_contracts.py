"""cloudctl.contracts: CRD openAPIV3Schema -> JSON Schema, and values-schema validation, against
the real vendored upstream schemas (Flux, MetalLB) and small CRDs exercising each extension."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import yaml

from cloudctl.contracts import (
    ContractError,
    CrdRegistry,
    format_path,
    openapi_to_jsonschema,
    validate_values,
    values_validator,
)
from cloudctl.errors import RenderError
from cloudctl.resources import read_text


def _crd(schema: dict[str, Any], *, kind: str = "Widget", group: str = "example.com") -> dict:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "names": {"kind": kind, "plural": "widgets"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                },
                {"name": "v0", "served": False, "storage": False},
            ],
        },
    }


WIDGET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["port"],
            "properties": {
                "port": {"x-kubernetes-int-or-string": True},
                "note": {"type": "string", "nullable": True},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "template": {
                    "type": "object",
                    "x-kubernetes-embedded-resource": True,
                    "x-kubernetes-preserve-unknown-fields": True,
                },
                "items": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"name": {"type": "string"}}},
                },
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
    },
}


def _widget(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": "default", "labels": {"a": "b"}},
        "spec": {"port": 80, **spec},
    }


@pytest.fixture(scope="module")
def widgets() -> CrdRegistry:
    return CrdRegistry.from_documents([_crd(WIDGET_SCHEMA)])


def test_only_served_versions_are_registered(widgets: CrdRegistry) -> None:
    assert widgets.kinds() == [("example.com", "v1", "Widget")]
    assert widgets.validate({**_widget(), "apiVersion": "example.com/v0"})[0].path == "apiVersion"


def test_valid_widget(widgets: CrdRegistry) -> None:
    assert widgets.validate(_widget()) == []


@pytest.mark.parametrize("port", [80, "http", "8080"])
def test_int_or_string_accepts_both(widgets: CrdRegistry, port: Any) -> None:
    assert widgets.validate(_widget(port=port)) == []


@pytest.mark.parametrize("port", [1.5, True, None, [80]])
def test_int_or_string_rejects_others(widgets: CrdRegistry, port: Any) -> None:
    problems = widgets.validate(_widget(port=port))
    assert problems and all(p.path == "spec.port" for p in problems)


def test_nullable(widgets: CrdRegistry) -> None:
    assert widgets.validate(_widget(note=None)) == []
    assert {p.path for p in widgets.validate(_widget(mode=None))} == {"spec.mode"}


def test_unknown_field_is_reported_with_its_own_path(widgets: CrdRegistry) -> None:
    problems = widgets.validate(_widget(bogus=1, items=[{"name": "x"}, {"name": "y", "extra": 2}]))
    assert [(p.path, p.message) for p in problems] == [
        ("spec.bogus", "unknown field (not in the schema)"),
        ("spec.items[1].extra", "unknown field (not in the schema)"),
    ]


def test_preserve_unknown_fields_keeps_anything(widgets: CrdRegistry) -> None:
    assert widgets.validate(_widget(free={"any": {"thing": [1, 2]}})) == []


def test_embedded_resource_metadata_is_checked(widgets: CrdRegistry) -> None:
    ok = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"x": 1}}
    assert widgets.validate(_widget(template=ok)) == []
    bad = {**ok, "metadata": {"name": 5}}
    assert [p.path for p in widgets.validate(_widget(template=bad))] == [
        "spec.template.metadata.name"
    ]


def test_root_metadata_is_object_meta(widgets: CrdRegistry) -> None:
    obj = _widget()
    obj["metadata"]["labels"] = {"a": 1}
    assert [p.path for p in widgets.validate(obj)] == ["metadata.labels.a"]


def test_enum_and_required_messages(widgets: CrdRegistry) -> None:
    obj = _widget(mode="c")
    del obj["spec"]["port"]
    problems = {p.path: p.message for p in widgets.validate(obj)}
    assert problems["spec.mode"] == "'c' is not one of ['a', 'b']"
    assert "'port' is a required property" in problems["spec"]


def test_check_raises_contract_error_naming_fields(widgets: CrdRegistry) -> None:
    with pytest.raises(ContractError) as exc:
        widgets.check(_widget(mode="zzz", bogus=True), source="w.yaml")
    assert exc.value.exit_code == 4
    text = str(exc.value)
    assert "w.yaml" in text and "spec.mode" in text and "spec.bogus" in text


def test_kind_without_crd(widgets: CrdRegistry) -> None:
    problems = widgets.validate({"apiVersion": "example.com/v1", "kind": "Gadget"})
    assert problems[0].path == "apiVersion" and "no CRD" in problems[0].message


def test_conversion_leaves_the_input_untouched() -> None:
    before = json.dumps(WIDGET_SCHEMA, sort_keys=True)
    openapi_to_jsonschema(WIDGET_SCHEMA)
    assert json.dumps(WIDGET_SCHEMA, sort_keys=True) == before


def test_format_path() -> None:
    assert format_path(["spec", "values", "ports", 0, "name"]) == "spec.values.ports[0].name"
    assert format_path([]) == ""


# --------------------------------------------------------------------------- real Flux CRDs


@pytest.fixture(scope="module")
def flux() -> CrdRegistry:
    text = read_text("flux", "gotk-components-v2.9.3.yaml")
    return CrdRegistry.from_documents(yaml.safe_load_all(text))


def _helmrelease(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": "x", "namespace": "flux-system"},
        "spec": {
            "interval": "10m",
            "chart": {"spec": {"chart": "c", "sourceRef": {"kind": "HelmRepository", "name": "r"}}},
            **spec,
        },
    }


def test_flux_crds_loaded(flux: CrdRegistry) -> None:
    for gvk in [
        ("helm.toolkit.fluxcd.io", "v2", "HelmRelease"),
        ("source.toolkit.fluxcd.io", "v1", "HelmRepository"),
        ("source.toolkit.fluxcd.io", "v1", "OCIRepository"),
        ("source.toolkit.fluxcd.io", "v1", "GitRepository"),
        ("kustomize.toolkit.fluxcd.io", "v1", "Kustomization"),
    ]:
        assert gvk in flux
    assert ("helm.toolkit.fluxcd.io", "v2beta2", "HelmRelease") not in flux


def test_flux_helmrelease_valid_with_free_values(flux: CrdRegistry) -> None:
    assert flux.validate(_helmrelease(values={"any": {"nested": [1, "x"]}})) == []


def test_flux_helmrelease_errors_name_the_field(flux: CrdRegistry) -> None:
    obj = _helmrelease(install={"crds": "Maybe"}, dependsOn=[{"nam": "a"}])
    obj["spec"]["chart"]["spec"]["sourceRef"]["kind"] = "ConfigMap"
    paths = {p.path for p in flux.validate(obj)}
    assert {
        "spec.install.crds",
        "spec.dependsOn[0].nam",
        "spec.dependsOn[0]",
        "spec.chart.spec.sourceRef.kind",
    } <= paths


def test_flux_interval_pattern(flux: CrdRegistry) -> None:
    paths = [p.path for p in flux.validate(_helmrelease(interval="ten minutes"))]
    assert paths == ["spec.interval"]


# --------------------------------------------------------------------------- values schemas


def _schema(relative: str) -> dict[str, Any]:
    return json.loads(read_text("helm-values", relative))


def test_metallb_https_draft07_uses_draft7() -> None:
    schema = _schema("_upstream/metallb/0.16.1/values.schema.json")
    assert schema["$schema"] == "https://json-schema.org/draft-07/schema#"
    assert values_validator(schema) is jsonschema.Draft7Validator
    # jsonschema itself would not recognise the https URL (the reason for our mapping)
    assert jsonschema.validators.validator_for(schema, default=None) is None


@pytest.mark.parametrize(
    ("uri", "cls"),
    [
        ("http://json-schema.org/draft-07/schema#", jsonschema.Draft7Validator),
        ("https://json-schema.org/draft-07/schema", jsonschema.Draft7Validator),
        ("http://json-schema.org/draft-04/schema#", jsonschema.Draft4Validator),
        ("https://json-schema.org/draft/2019-09/schema", jsonschema.Draft201909Validator),
        ("https://json-schema.org/draft/2020-12/schema", jsonschema.Draft202012Validator),
    ],
)
def test_validator_from_schema_uri(uri: str, cls: type) -> None:
    assert values_validator({"$schema": uri}) is cls


def test_no_schema_uri_is_2020_12_and_unknown_is_an_error() -> None:
    assert values_validator({}) is jsonschema.Draft202012Validator
    with pytest.raises(RenderError, match="unknown"):
        values_validator({"$schema": "https://example.com/my-schema"})


def test_draft_choice_changes_the_verdict() -> None:
    """In draft-07 keywords beside $ref are ignored; in 2020-12 they apply."""
    body = {
        "properties": {"a": {"$ref": "#/definitions/s", "type": "integer"}},
        "definitions": {"s": {"type": "string"}},
    }
    d7 = {"$schema": "https://json-schema.org/draft-07/schema#", **body}
    d2020 = {"$schema": "https://json-schema.org/draft/2020-12/schema", **body}
    assert validate_values({"a": "x"}, d7) == []
    assert [p.path for p in validate_values({"a": "x"}, d2020)] == ["a"]


@pytest.mark.parametrize(
    "chart",
    ["cilium/1.19.6", "cilium/1.20.0", "metallb/0.16.1", "linstor-cluster/1.1.1"],
)
def test_chart_defaults_validate_against_their_schema(chart: str) -> None:
    schema = _schema(f"_upstream/{chart}/values.schema.json")
    values = yaml.safe_load(read_text("helm-values", f"_upstream/{chart}/values.yaml"))
    assert validate_values(values, schema) == []


def test_metallb_values_error_path_through_allof_ref() -> None:
    schema = _schema("_upstream/metallb/0.16.1/values.schema.json")
    values = yaml.safe_load(read_text("helm-values", "_upstream/metallb/0.16.1/values.yaml"))
    values["controller"]["logLevel"] = "loud"
    problems = validate_values(values, schema, prefix=("platform", "metallb", "values"))
    assert [p.path for p in problems] == ["platform.metallb.values.controller.logLevel"]
    assert "'loud' is not one of" in problems[0].message
