"""The Kubernetes API emulator against the official ``kubernetes`` client over real TLS, and the
whole Flux install + platform HelmRelease chain through ``cloudctl.kube`` (apply, waits).

Data: the vendored Flux install (flux/gotk-components-*.yaml), the platform catalog
(flux/platform.yaml), Helm values (helm-values/) and Cilium's upstream values.schema.json.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client, dynamic

from cloudctl.emulate.kube_api import KubeApiEmulator
from cloudctl.emulate.kube_tls import make_pki
from cloudctl.emulate.schemas import chart_values_validators
from cloudctl.errors import PlatformError
from cloudctl.inventory import load_inventory
from cloudctl.kube import (
    Kube,
    ReleaseStatus,
    api_client,
    apply_manifests,
    parse_manifests,
    wait_helmreleases,
    wait_workloads,
)
from cloudctl.kube.objects import ObjectRef
from cloudctl.resources import data_path, read_text

FLUX = "gotk-components-v2.9.3.yaml"
REPO = Path(__file__).resolve().parents[2]


def _flux_docs() -> list[dict[str, Any]]:
    return parse_manifests(read_text("flux", FLUX), source=FLUX)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = (
            _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


def platform_manifests(overrides: dict[str, dict[str, Any]] | None = None) -> list[dict]:
    """Sources + HelmReleases for every release of flux/platform.yaml (values from
    helm-values/), the shape the gitops renderer writes."""
    catalog = yaml.safe_load(read_text("flux", "platform.yaml"))
    out: list[dict[str, Any]] = []
    ns = "flux-system"
    for name, src in catalog["sources"].items():
        meta = {"name": name, "namespace": ns}
        if src["type"] == "helm":
            out.append(
                {
                    "apiVersion": "source.toolkit.fluxcd.io/v1",
                    "kind": "HelmRepository",
                    "metadata": meta,
                    "spec": {"url": src["url"], "interval": "1h"},
                }
            )
        elif src["type"] == "git":
            out.append(
                {
                    "apiVersion": "source.toolkit.fluxcd.io/v1",
                    "kind": "GitRepository",
                    "metadata": meta,
                    "spec": {
                        "url": "https://git.example.org/platform.git",
                        "interval": "1m",
                        "ref": {"branch": "main"},
                    },
                }
            )
    for name, rel in catalog["releases"].items():
        values: dict[str, Any] = {}
        for f in rel.get("values") or []:
            values = _deep_merge(values, yaml.safe_load(read_text("helm-values", f)) or {})
        values = _deep_merge(values, (overrides or {}).get(name, {}))
        spec: dict[str, Any] = {
            "interval": "10m",
            "releaseName": name,
            "targetNamespace": rel["namespace"],
            "install": {"createNamespace": True},
            "dependsOn": [{"name": d} for d in rel["dependsOn"]],
            "values": values,
        }
        source = catalog["sources"][rel["source"]]
        if source["type"] == "oci":
            oci = {
                "apiVersion": "source.toolkit.fluxcd.io/v1",
                "kind": "OCIRepository",
                "metadata": {"name": name, "namespace": ns},
                "spec": {
                    "url": source["url"],
                    "interval": "1h",
                    "ref": {"tag": str(rel["version"])},
                },
            }
            out.append(oci)
            spec["chartRef"] = {"kind": "OCIRepository", "name": name}
        else:
            chart = rel["chart"] if source["type"] == "helm" else f"./charts/{rel['chart']}"
            spec["chart"] = {
                "spec": {
                    "chart": chart,
                    "version": str(rel["version"]),
                    "sourceRef": {
                        "kind": "HelmRepository" if source["type"] == "helm" else "GitRepository",
                        "name": rel["source"],
                    },
                }
            }
        out.append(
            {
                "apiVersion": "helm.toolkit.fluxcd.io/v2",
                "kind": "HelmRelease",
                "metadata": {"name": name, "namespace": ns},
                "spec": spec,
            }
        )
    return out


@pytest.fixture
def emulator() -> Iterator[KubeApiEmulator]:
    with KubeApiEmulator(
        crd_delay=0.05,
        workload_delay=0.05,
        release_delay=0.02,
        values_validators=chart_values_validators(),
    ) as emu:
        yield emu


@pytest.fixture
def official(emulator: KubeApiEmulator) -> Iterator[client.ApiClient]:
    api = api_client(emulator.kubeconfig())
    yield api
    api.close()


def test_official_client_crud_over_tls(official: client.ApiClient) -> None:
    core, apps = client.CoreV1Api(official), client.AppsV1Api(official)
    core.create_namespace({"metadata": {"name": "demo"}})
    cm = core.create_namespaced_config_map(
        "demo", {"metadata": {"name": "c", "labels": {"app": "x"}}, "data": {"k": "v"}}
    )
    assert cm.metadata.uid and cm.metadata.creation_timestamp is not None
    assert core.read_namespaced_config_map("c", "demo").data == {"k": "v"}
    listed = core.list_namespaced_config_map("demo", label_selector="app=x")
    assert [i.metadata.name for i in listed.items] == ["c"]
    assert core.list_namespaced_config_map("demo", label_selector="app=y").items == []
    patched = core.patch_namespaced_config_map("c", "demo", {"data": {"k": "w"}})
    assert patched.data == {"k": "w"}
    assert int(patched.metadata.resource_version) > int(cm.metadata.resource_version)
    with pytest.raises(client.ApiException) as exc:
        core.create_namespaced_config_map("demo", {"metadata": {"name": "c"}})
    assert exc.value.status == 409 and json.loads(exc.value.body)["reason"] == "AlreadyExists"
    core.delete_namespaced_config_map("c", "demo")
    with pytest.raises(client.ApiException) as exc:
        core.read_namespaced_config_map("c", "demo")
    assert exc.value.status == 404
    assert json.loads(exc.value.body)["message"] == 'configmaps "c" not found'

    dep = {
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
            },
        },
    }
    created = apps.create_namespaced_deployment("demo", dep)
    assert created.metadata.generation == 1
    scaled = apps.patch_namespaced_deployment("web", "demo", {"spec": {"replicas": 3}})
    assert scaled.metadata.generation == 2
    done = wait_workloads(
        Kube(official),
        [ObjectRef("apps/v1", "Deployment", "web", "demo")],
        timeout=5,
        interval=0.02,
    )
    assert done[0].ready and done[0].detail == "3 replicas available"
    st = apps.read_namespaced_deployment_status("web", "demo").status
    assert st.available_replicas == 3 and st.observed_generation == 2


def test_server_side_apply_with_the_official_client_is_idempotent(
    official: client.ApiClient,
) -> None:
    core = client.CoreV1Api(official)
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "ssa", "namespace": "default"},
        "data": {"a": "1"},
    }

    def ssa(manager: str, force: bool) -> Any:
        return core.patch_namespaced_config_map(
            "ssa",
            "default",
            body,
            field_manager=manager,
            force=force,
            _content_type="application/apply-patch+yaml",
        )

    first = ssa("cloudctl", True)
    second = ssa("cloudctl", True)
    assert second.metadata.resource_version == first.metadata.resource_version
    assert [(m.manager, m.operation) for m in second.metadata.managed_fields] == [
        ("cloudctl", "Apply")
    ]
    body["data"] = {"a": "2"}
    with pytest.raises(client.ApiException) as exc:
        ssa("someone-else", False)
    assert exc.value.status == 409
    assert 'conflict with "cloudctl": .data.a' in json.loads(exc.value.body)["message"]
    assert ssa("someone-else", True).data == {"a": "2"}


def test_discovery_shows_registered_crds(official: client.ApiClient) -> None:
    kube = Kube(official)
    flux = _flux_docs()
    apply_manifests(
        kube, [d for d in flux if d["kind"] in ("Namespace", "CustomResourceDefinition")]
    )
    groups = {g.name: g for g in client.ApisApi(official).get_api_versions().groups}
    assert groups["helm.toolkit.fluxcd.io"].preferred_version.version == "v2"
    assert "source.toolkit.fluxcd.io" in groups
    crd = client.ApiextensionsV1Api(official).read_custom_resource_definition(
        "helmreleases.helm.toolkit.fluxcd.io"
    )
    assert {(c.type, c.status) for c in crd.status.conditions} >= {("Established", "True")}
    hr = dynamic.DynamicClient(official).resources.get(
        api_version="helm.toolkit.fluxcd.io/v2", kind="HelmRelease"
    )
    assert (hr.name, hr.namespaced) == ("helmreleases", True)

    custom = client.CustomObjectsApi(official)
    repo = {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "HelmRepository",
        "metadata": {"name": "cilium"},
        "spec": {"url": "https://helm.cilium.io/", "interval": "1h"},
    }
    custom.create_namespaced_custom_object(
        "source.toolkit.fluxcd.io", "v1", "flux-system", "helmrepositories", repo
    )
    got = custom.list_namespaced_custom_object(
        "source.toolkit.fluxcd.io", "v1", "flux-system", "helmrepositories"
    )
    assert [i["metadata"]["name"] for i in got["items"]] == ["cilium"]
    bad = {**repo, "metadata": {"name": "bad"}, "spec": {"url": 5, "interval": "1h"}}
    with pytest.raises(client.ApiException) as exc:
        custom.create_namespaced_custom_object(
            "source.toolkit.fluxcd.io", "v1", "flux-system", "helmrepositories", bad
        )
    status = json.loads(exc.value.body)
    assert exc.value.status == 422 and status["reason"] == "Invalid"
    assert [c["field"] for c in status["details"]["causes"]] == ["spec.url"]


def test_client_certificate_is_required(emulator: KubeApiEmulator) -> None:
    ctx = ssl.create_default_context(cadata=emulator.ca_pem.decode())
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"{emulator.url}/version", context=ctx, timeout=5).read()


def test_flux_and_platform_install_in_dependency_order(emulator: KubeApiEmulator) -> None:
    inv = load_inventory(REPO / "inventory.example.yaml").inventory
    for node in inv.nodes:
        emulator.add_node(node.name, str(node.ip), (node.role,))
    kube = Kube.from_kubeconfig(emulator.kubeconfig())
    flux = _flux_docs()
    applied = apply_manifests(kube, flux)
    wait_workloads(kube, [a.ref for a in applied], timeout=10, interval=0.02)

    nodes = client.CoreV1Api(kube.api).list_node().items
    assert len(nodes) == len(inv.nodes)
    assert all(_node_ready(n) == "False" for n in nodes)  # no CNI yet

    platform = platform_manifests()
    applied = apply_manifests(kube, platform)
    assert all(a.action == "created" for a in applied)
    progress: list[ReleaseStatus] = []
    final = wait_helmreleases(kube, timeout=20, interval=0.02, on_status=progress.append)
    order = [s.name for s in final]
    assert order[:2] == ["cilium", "kube-ovn"]
    ready_at = {s.name: i for i, s in enumerate(progress) if s.state == "ready"}
    catalog = yaml.safe_load(read_text("flux", "platform.yaml"))["releases"]
    assert set(ready_at) == set(catalog)
    for name, rel in catalog.items():
        for dep in rel["dependsOn"]:
            assert ready_at[dep] < ready_at[name], (dep, name)

    assert all(_node_ready(n) == "True" for n in client.CoreV1Api(kube.api).list_node().items)
    namespaces = {n.metadata.name for n in client.CoreV1Api(kube.api).list_namespace().items}
    assert {r["namespace"] for r in catalog.values()} <= namespaces  # install.createNamespace
    # the whole set again: nothing changes
    assert {a.action for a in apply_manifests(kube, flux + platform)} == {"unchanged"}
    assert data_path("flux", FLUX).is_file()


def test_invalid_values_override_fails_with_the_reason(emulator: KubeApiEmulator) -> None:
    kube = Kube.from_kubeconfig(emulator.kubeconfig())
    apply_manifests(kube, _flux_docs())
    # the upstream chart schema types kubeProxyReplacement as string or boolean
    apply_manifests(kube, platform_manifests({"cilium": {"kubeProxyReplacement": 7}}))
    with pytest.raises(PlatformError) as exc:
        wait_helmreleases(kube, timeout=20, interval=0.02)
    text = str(exc.value)
    assert exc.value.exit_code == 8
    assert text.startswith(
        "HelmRelease flux-system/cilium failed: InstallFailed: Helm install "
        "failed for release cilium/cilium with chart cilium@1.19.6"
    )
    assert "at '/kubeProxyReplacement': 7 is not of type 'string', 'boolean'" in text


def _node_ready(node: Any) -> str:
    return next(c.status for c in node.status.conditions if c.type == "Ready")


def _make_ca() -> tuple[bytes, bytes]:
    """A Kubernetes CA as Talos secrets hold it: ECDSA P-256, PEM certificate and key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def test_cluster_ca_lets_other_kubeconfigs_in() -> None:
    """With the cluster's Kubernetes CA, an admin certificate issued elsewhere from that CA (as
    the Talos emulator does for the kubeconfig it streams) is accepted and the server trusted."""
    ca = _make_ca()
    elsewhere = make_pki(ca=ca)  # another issuer of the same CA
    with KubeApiEmulator(ca=ca) as emu:
        assert emu.ca_pem == ca[0]
        doc = yaml.safe_load(emu.kubeconfig())
        user = doc["users"][0]["user"]
        user["client-certificate-data"] = base64.b64encode(elsewhere.client_cert_pem).decode()
        user["client-key-data"] = base64.b64encode(elsewhere.client_key_pem).decode()
        with Kube.from_kubeconfig(doc) as kube:
            assert kube.get(ObjectRef("v1", "Namespace", "default")) is not None


def test_rendered_gitops_objects_install_on_the_emulator(emulator: KubeApiEmulator) -> None:
    """The objects cloudctl renders for inventory.example.yaml (patched Flux install, sources,
    HelmReleases) pass the emulator's CRD validation and become Ready in dependsOn order.

    The local charts (kubevirt-operator, cdi-operator, metallb-config, ...) come from the
    ``cloudctl-platform`` GitRepository, which the renderer only writes in GitOps mode; it is
    added here as GitOps mode would."""
    from cloudctl.render.gitops import gitops_objects
    from cloudctl.render.gitops.flux import flux_documents

    inv = load_inventory(REPO / "inventory.example.yaml").inventory
    objs = gitops_objects(inv)
    git = {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {"name": "cloudctl-platform", "namespace": "flux-system"},
        "spec": {
            "url": "https://git.example.org/platform.git",
            "interval": "1m",
            "ref": {"branch": "main"},
        },
    }
    sync = objs.sync or [git]
    with Kube.from_kubeconfig(emulator.kubeconfig()) as kube:
        apply_manifests(kube, flux_documents())
        apply_manifests(
            kube, objs.namespaces + objs.sources + sync + objs.helm_releases + objs.extra
        )
        progress: list[ReleaseStatus] = []
        final = wait_helmreleases(kube, timeout=20, interval=0.02, on_status=progress.append)
    assert {s.name for s in final} == {r.name for r in objs.releases}
    ready_at = {s.name: i for i, s in enumerate(progress) if s.state == "ready"}
    for rel in objs.releases:
        for dep in rel.depends_on:
            assert ready_at[dep] < ready_at[rel.name], (dep, rel.name)
