"""The rendered tree against real tools: kustomize (as built into kubectl) builds it, and every
built-in object round-trips through the official Kubernetes client models unchanged (so no
misspelled or unknown field in the patched Flux Deployments, Namespaces, ConfigMap, ...)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient

from cloudctl.inventory.models import Inventory
from cloudctl.render.files import Files
from cloudctl.render.gitops import render_gitops

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory.example.yaml"
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _inventory(gitops: bool) -> Inventory:
    data = yaml.safe_load(EXAMPLE.read_text())
    if gitops:
        data["gitops"] = {"repo": "https://git.example.com/infra/rack1.git", "path": "c/{cluster}"}
    return Inventory.model_validate(data)


@pytest.fixture(scope="module", params=[False, True], ids=["no-gitops", "gitops"])
def files(request: pytest.FixtureRequest) -> Files:
    return render_gitops(_inventory(request.param))


def _inputs(files: Files) -> list[dict[str, Any]]:
    """Objects of the kustomize inputs (not kustomization.yaml, not charts/)."""
    out = []
    for path, f in files.items():
        if not path.endswith(".yaml") or path.startswith("gitops/charts/"):
            continue
        for d in yaml.load_all(f.data.decode(), Loader=LOADER):
            if d and d.get("apiVersion") != "kustomize.config.k8s.io/v1beta1":
                out.append(d)
    return out


def test_kustomize_builds_the_tree(files: Files, tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("needs kubectl (its built-in kustomize) on PATH")
    for rel, f in files.items():
        target = tmp_path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(f.data)
    built = []
    # gitops/ and its tenants/ (its own root: applied once the platform's providers run)
    for root in ("gitops", "gitops/tenants"):
        out = subprocess.run(
            [kubectl, "kustomize", str(tmp_path / root)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        built += [d for d in yaml.load_all(out.stdout, Loader=LOADER) if d]

    def key(d: dict[str, Any]) -> tuple[str, str, str]:
        return (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])

    assert Counter(key(d) for d in built) == Counter(key(d) for d in _inputs(files))


@pytest.mark.parametrize(
    "kind", ["Namespace", "ServiceAccount", "Deployment", "Service", "ConfigMap", "ResourceQuota"]
)
def test_builtin_objects_round_trip_through_client_models(files: Files, kind: str) -> None:
    api = ApiClient()
    objs = [d for d in _inputs(files) if d["kind"] == kind and d["apiVersion"] in ("v1", "apps/v1")]
    assert objs
    for d in objs:
        model = api.deserialize(json.dumps(d), f"V1{kind}", "application/json")
        assert api.sanitize_for_serialization(model) == d, d["metadata"]["name"]


def test_round_trip_detects_a_misspelled_field() -> None:
    api = ApiClient()
    d = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x", "lables": {}}}
    model = api.deserialize(json.dumps(d), "V1Namespace", "application/json")
    assert api.sanitize_for_serialization(model) != d
