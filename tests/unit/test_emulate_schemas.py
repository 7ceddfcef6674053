"""The emulators judge cloudctl's output with their own reading of the upstream schemas.

If the emulators validated with cloudctl's validators, a bug there would pass end to end; these
tests pin that the emulate package neither imports nor calls them, and that its own path
accepts what upstream accepts and rejects what Talos / Helm / the API server would reject.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
import yaml

import cloudctl.contracts
import cloudctl.talos_schema
from cloudctl.emulate import schemas
from cloudctl.emulate.schemas import (
    UNKNOWN_FIELD,
    ConfigRejected,
    CrdValidators,
    parse_config,
    talos_config_problems,
    values_problems,
)
from cloudctl.emulate.talos_scenario import cluster_material
from cloudctl.inventory import load_inventory
from cloudctl.resources import read_text

EMULATE = Path(schemas.__file__).parent
PRODUCT_VALIDATORS = ("cloudctl.talos_schema", "cloudctl.contracts", "cloudctl.render",
                      "cloudctl.catalog")
# talos_scenario renders the configs a scenario applies: it produces the input under test,
# it never judges one.
SCENARIO_INPUT = {("talos_scenario.py", "cloudctl.render.machineconfig")}
ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = "cloudctl.emulate" if node.level == 1 else "cloudctl" if node.level == 2 else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            out.append(module)
            out += [f"{module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names]
    return out


def test_emulate_package_does_not_import_product_validators() -> None:
    offending = []
    for path in sorted(EMULATE.glob("*.py")):
        for module in _imports(path):
            if any(module == v or module.startswith(v + ".") for v in PRODUCT_VALIDATORS):
                head = ".".join(module.split(".")[:3])
                if (path.name, head) not in SCENARIO_INPUT:
                    offending.append(f"{path.name}: {module}")
    assert offending == []


@pytest.fixture(scope="module")
def rendered() -> dict[str, bytes]:
    inv = load_inventory(ROOT / "inventory.example.yaml").inventory
    return cluster_material(inv).configs


@pytest.fixture
def product_validators_broken(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every product validator explode: the emulator path must not notice."""

    def boom(*_: Any, **__: Any) -> Any:
        raise AssertionError("the emulator called a product validator")

    for name in ("validate_documents", "validate_config", "split_documents"):
        monkeypatch.setattr(cloudctl.talos_schema, name, boom)
    for name in ("validate_values", "crd_schemas", "openapi_to_jsonschema"):
        monkeypatch.setattr(cloudctl.contracts, name, boom)
    monkeypatch.setattr(cloudctl.contracts.CrdRegistry, "validate", boom)


@pytest.mark.usefixtures("product_validators_broken")
def test_rendered_configs_accepted_by_the_emulator_path_alone(
    rendered: dict[str, bytes],
) -> None:
    inv = load_inventory(ROOT / "inventory.example.yaml").inventory
    for name, config in rendered.items():
        docs = parse_config(config.decode())
        assert talos_config_problems(docs, inv.cluster.talos_version) == [], name


@pytest.mark.usefixtures("product_validators_broken")
def test_talos_rejects_what_talos_rejects(rendered: dict[str, bytes]) -> None:
    inv = load_inventory(ROOT / "inventory.example.yaml").inventory
    version = inv.cluster.talos_version
    text = next(iter(rendered.values())).decode()
    docs = parse_config(text)
    v1 = next(d for d in docs if d.get("version") == "v1alpha1")
    v1["machine"]["kubelet"]["notAField"] = 1
    v1["cluster"]["wrongToo"] = {}
    problems = talos_config_problems(docs, version)
    assert any("machine.kubelet.notAField: unknown field" in p for p in problems)
    assert any("cluster.wrongToo: unknown field" in p for p in problems)
    assert talos_config_problems([{"apiVersion": "v1alpha1", "kind": "NoSuchConfig"}],
                                 version)[0].endswith("kind 'NoSuchConfig'")
    assert "persist" in text  # written like talosctl gen config, and accepted
    with pytest.raises(ConfigRejected, match="already defined"):
        parse_config("version: v1alpha1\nmachine: {}\nmachine: {}\n")
    with pytest.raises(ConfigRejected, match="not a mapping"):
        parse_config("- a\n")


@pytest.mark.usefixtures("product_validators_broken")
def test_chart_values_checked_against_the_upstream_schema_with_defaults() -> None:
    assert values_problems("cilium", "1.19.6", {"kubeProxyReplacement": True}) == []
    problems = values_problems("cilium", "1.19.6", {"kubeProxyReplacement": 7})
    assert problems == ["at '/kubeProxyReplacement': 7 is not of type 'string', 'boolean'"]
    assert values_problems("cilium", "9.9.9", {"kubeProxyReplacement": 7}) == []  # no schema
    # MetalLB declares https://json-schema.org/draft-07/schema#: draft 7 semantics apply
    assert schemas._draft({"$schema": "https://json-schema.org/draft-07/schema#"}).__name__ == (
        "Draft7Validator")


def _crd(name: str) -> dict[str, Any]:
    docs = yaml.safe_load_all(read_text("helm-values", name))
    return next(d for d in docs if d and d.get("kind") == "CustomResourceDefinition")


@pytest.mark.usefixtures("product_validators_broken")
def test_custom_resources_checked_like_the_api_server() -> None:
    reg = CrdValidators.from_documents(
        [_crd("_upstream/metallb/0.16.1/crds/metallb.io_ipaddresspools.yaml")])
    pool = {
        "apiVersion": "metallb.io/v1beta1",
        "kind": "IPAddressPool",
        "metadata": {"name": "lb", "namespace": "metallb-system", "labels": {"a": "b"}},
        "spec": {"addresses": ["10.0.0.10-10.0.0.20"], "autoAssign": True},
    }
    assert reg.validate(pool) == []
    pool["spec"]["autoAssign"] = "yes"
    pool["spec"]["colour"] = "red"
    pool["metadata"]["labels"] = {"a": 1}
    assert reg.validate(pool) == [
        ("metadata.labels.a", "1 is not of type 'string'"),
        ("spec.autoAssign", "'yes' is not of type 'boolean'"),
        ("spec.colour", UNKNOWN_FIELD),
    ]
    assert reg.validate({"apiVersion": "metallb.io/v9", "kind": "IPAddressPool"})[0][0] == (
        "apiVersion")
