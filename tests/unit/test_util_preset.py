"""The single-source helpers (cloudctl/util/) and the Cozystack preset (talos/preset.yaml)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from cloudctl.errors import RenderError
from cloudctl.inventory.models import DEFAULT_EXTENSIONS, Inventory
from cloudctl.preset import parse_preset, preset
from cloudctl.render.gitops import gitops_objects
from cloudctl.render.gitops.flux import flux_documents, flux_version, manifest_name
from cloudctl.render.machineconfig.v1alpha1 import v1alpha1_document
from cloudctl.resources import read_text
from cloudctl.util.conditions import condition
from cloudctl.util.merge import deep_merge
from cloudctl.util.paths import format_path

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory.example.yaml"


def test_deep_merge_rules_and_inputs_untouched() -> None:
    base = {"a": {"x": 1, "l": [1, 2]}, "b": 1, "keep": {"k": 1}}
    over = {"a": {"l": [3], "y": 2}, "c": {"n": {"m": 1}}, "b": {"now": "map"}}
    before = copy.deepcopy((base, over))
    out = deep_merge(base, over)
    assert out == {
        "a": {"x": 1, "l": [3], "y": 2},
        "b": {"now": "map"},
        "keep": {"k": 1},
        "c": {"n": {"m": 1}},
    }
    assert list(out) == ["a", "b", "keep", "c"]  # first position kept, new keys appended
    assert (base, over) == before
    out["a"]["l"].append(9)
    assert over["a"]["l"] == [3]  # no sharing with the inputs


def test_deep_merge_with_delete_markers() -> None:
    def gone(v: object) -> bool:
        return v is None or v == {"$patch": "delete"}

    base = {"a": {"x": 1, "y": 2}, "b": 1}
    over = {"a": {"x": None}, "b": {"$patch": "delete"}, "new": {"k": None, "v": 1}}
    assert deep_merge(base, over, delete=gone) == {"a": {"y": 2}, "new": {"v": 1}}
    # without a delete predicate, None is a value like any other
    assert deep_merge(base, {"b": None}) == {"a": {"x": 1, "y": 2}, "b": None}


def test_condition_lookup() -> None:
    obj = {"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Stalled"}]}}
    assert condition(obj, "Ready") == {"type": "Ready", "status": "True"}
    assert condition(obj, "Available") is None
    assert condition({}, "Ready") is None
    assert condition({"status": {"conditions": None}}, "Ready") is None


def test_format_path() -> None:
    assert format_path(["nodes", 0, "macs"]) == "nodes[0].macs"
    assert format_path([0, "name"]) == "[0].name"
    assert format_path([]) == ""


def test_inventory_defaults_come_from_the_preset() -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["cluster"].pop("domain", None)
    data.pop("image", None)
    inv = Inventory.model_validate(data)
    assert inv.cluster.domain == preset().cluster_domain == "cozy.local"
    assert tuple(inv.image.extensions) == DEFAULT_EXTENSIONS == preset().extensions


def test_machine_config_kubeprism_flux_and_cilium_share_one_endpoint() -> None:
    from cloudctl.secrets import SecretsStore

    inv = Inventory.model_validate(yaml.safe_load(EXAMPLE.read_text()))
    bundle = SecretsStore(Path(__file__).resolve().parents[1] / "golden/secrets/rack1").load()
    prism = preset().kube_prism
    doc = v1alpha1_document(inv, bundle, inv.nodes[0], multi_doc=True)
    assert doc["machine"]["features"]["kubePrism"] == {"enabled": True, "port": prism.port}
    assert doc["machine"]["sysctls"] == preset().sysctls()
    assert doc["machine"]["kernel"]["modules"] == preset().kernel_modules()
    assert [f["path"] for f in doc["machine"]["files"]] == [
        "/etc/cri/conf.d/20-customization.part",
        "/etc/lvm/lvm.conf",
    ]
    envs = [
        {e["name"]: e.get("value") for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
        for d in flux_documents()
        if d["kind"] == "Deployment"
    ]
    assert envs and all(e["KUBERNETES_SERVICE_PORT"] == str(prism.port) for e in envs)
    assert all(e["KUBERNETES_SERVICE_HOST"] == prism.host for e in envs)
    cilium = gitops_objects(inv).values["cilium"]
    assert (cilium["k8sServiceHost"], cilium["k8sServicePort"]) == (prism.host, prism.port)


def test_flux_version_is_pinned_once() -> None:
    assert manifest_name() == f"gotk-components-{flux_version()}.yaml"
    assert f"# Flux Version: {flux_version()}" in read_text("flux", manifest_name())


def test_preset_rejects_broken_data() -> None:
    good = yaml.safe_load(read_text("talos", "preset.yaml"))
    bad = copy.deepcopy(good)
    bad["machine"]["sysctls"]["net.core.netdev_budget"] = 600
    with pytest.raises(RenderError, match="sysctls values must be strings"):
        parse_preset(yaml.safe_dump(bad))
    bad = copy.deepcopy(good)
    del bad["kubePrism"]["port"]
    with pytest.raises(RenderError, match="kubePrism"):
        parse_preset(yaml.safe_dump(bad))
