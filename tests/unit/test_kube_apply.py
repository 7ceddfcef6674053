"""cloudctl.kube: kubeconfig loading, apply order, server-side apply of the real Flux install
against the API emulator over TLS, and errors naming the object and the field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudctl.emulate.kube_api import KubeApiEmulator
from cloudctl.errors import InputError, RemoteError, Timeout
from cloudctl.kube import (
    Kube,
    KubeApiError,
    KubeUnreachable,
    ObjectRef,
    apply_manifests,
    order_for_apply,
    parse_manifests,
)
from cloudctl.kube.apply import wait_crds_established
from cloudctl.resources import read_text


@pytest.fixture(scope="module")
def flux_docs() -> list[dict[str, Any]]:
    return parse_manifests(read_text("flux", "gotk-components-v2.9.3.yaml"), source="gotk")


@pytest.fixture
def emulator() -> Iterator[KubeApiEmulator]:
    with KubeApiEmulator(crd_delay=0.05) as emu:
        yield emu


@pytest.fixture
def kube(emulator: KubeApiEmulator) -> Iterator[Kube]:
    with Kube.from_kubeconfig(emulator.kubeconfig(), timeout=10) as k:
        yield k


def test_apply_order_puts_namespaces_and_crds_first() -> None:
    objs = [
        {"kind": "HelmRelease"},
        {"kind": "Deployment"},
        {"kind": "Widget"},
        {"kind": "ConfigMap"},
        {"kind": "HelmRepository"},
        {"kind": "CustomResourceDefinition"},
        {"kind": "ClusterRoleBinding"},
        {"kind": "ServiceAccount"},
        {"kind": "Namespace"},
        {"kind": "Service"},
    ]
    kinds = [o["kind"] for o in order_for_apply(objs)]
    assert kinds == [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRoleBinding",
        "ConfigMap",
        "Service",
        "Deployment",
        "Widget",
        "HelmRepository",
        "HelmRelease",
    ]


def test_parse_manifests_names_the_bad_document() -> None:
    with pytest.raises(InputError) as exc:
        parse_manifests("kind: ConfigMap\nmetadata: {name: a}\n---\n- 1\n", source="x.yaml")
    assert "x.yaml" in str(exc.value)
    assert {p.path for p in exc.value.problems} == {"[0].apiVersion", "[1]"}
    docs = parse_manifests(
        "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, "
        "metadata: {name: a}}\n---\n",
        source="l.yaml",
    )
    assert [d["metadata"]["name"] for d in docs] == ["a"]


def test_kubeconfig_errors_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc:
        Kube.from_kubeconfig(tmp_path / "missing")
    assert "missing" in str(exc.value)
    with pytest.raises(InputError):
        Kube.from_kubeconfig(b"apiVersion: v1\nkind: Config\nclusters: []\n")


def test_apply_flux_install_then_reapply_is_a_no_op(
    kube: Kube, emulator: KubeApiEmulator, flux_docs: list[dict[str, Any]]
) -> None:
    seen: list[str] = []
    first = apply_manifests(kube, flux_docs, on_applied=lambda a: seen.append(a.ref.kind))
    assert len(first) == len(flux_docs)
    assert {a.action for a in first} == {"created"}
    assert seen[0] == "Namespace" and seen[1] == "CustomResourceDefinition"
    assert seen.index("Deployment") > max(
        i for i, k in enumerate(seen) if k == "CustomResourceDefinition"
    )
    helm_controller = emulator.get("apps/v1", "Deployment", "helm-controller", "flux-system")
    assert helm_controller is not None
    managers = {m["manager"] for m in helm_controller["metadata"]["managedFields"]}
    assert managers == {"cloudctl"}

    second = apply_manifests(kube, flux_docs)
    assert {a.action for a in second} == {"unchanged"}
    # "unchanged" = resourceVersion read before the apply == the one the apply returned
    before = emulator.get("apps/v1", "Deployment", "helm-controller", "flux-system")
    assert before is not None
    (hc,) = [a for a in second if a.ref.name == "helm-controller" and a.ref.kind == "Deployment"]
    assert hc.resource_version == before["metadata"]["resourceVersion"]
    # the CRD's kind is now served and discoverable
    res = kube.resource("helm.toolkit.fluxcd.io/v2", "HelmRelease")
    assert res is not None and res.plural == "helmreleases" and res.namespaced


def test_invalid_custom_resource_names_object_and_field(
    kube: Kube, flux_docs: list[dict[str, Any]]
) -> None:
    apply_manifests(
        kube, [d for d in flux_docs if d["kind"] in ("Namespace", "CustomResourceDefinition")]
    )
    bad = {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": "cilium", "namespace": "flux-system"},
        "spec": {
            "interval": 600,
            "chart": {
                "spec": {
                    "chart": "cilium",
                    "sourceRef": {"kind": "HelmRepository", "name": "cilium"},
                }
            },
        },
    }
    with pytest.raises(KubeApiError) as exc:
        apply_manifests(kube, [bad])
    err = exc.value
    assert isinstance(err, RemoteError) and err.exit_code == 6
    assert err.code == 422 and err.reason == "Invalid"
    assert err.fields == ["spec.interval"]
    assert str(err).startswith("HelmRelease flux-system/cilium: Invalid (422): ")
    assert "spec.interval" in str(err)

    unknown = {**bad, "spec": {**bad["spec"], "interval": "10m", "colour": "blue"}}
    with pytest.raises(KubeApiError) as exc:
        apply_manifests(kube, [unknown])
    assert exc.value.code == 400 and exc.value.fields == ["spec.colour"]


def test_custom_resource_without_its_crd_is_named(kube: Kube) -> None:
    widget = {
        "apiVersion": "example.org/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": "default"},
    }
    with pytest.raises(KubeApiError) as exc:
        apply_manifests(kube, [widget])
    assert "Widget default/w" in str(exc.value)
    assert "does not serve kind Widget in apiVersion example.org/v1" in str(exc.value)


def test_namespace_defaulting_and_missing_namespace(kube: Kube) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}}
    (applied,) = apply_manifests(kube, [cm], default_namespace="kube-system")
    assert applied.ref == ObjectRef("v1", "ConfigMap", "c", "kube-system")
    cm2 = {**cm, "metadata": {"name": "c", "namespace": "ghost"}}
    with pytest.raises(KubeApiError) as exc:
        apply_manifests(kube, [cm2])
    assert exc.value.code == 404 and 'namespaces "ghost" not found' in str(exc.value)
    assert kube.delete(applied.ref) and not kube.delete(applied.ref)


def test_crd_that_never_establishes_times_out_naming_it(kube: Kube) -> None:
    ticks = iter(range(1000))
    with pytest.raises(Timeout) as exc:
        wait_crds_established(
            kube,
            ["widgets.example.org"],
            timeout=3,
            clock=lambda: float(next(ticks)),
            sleep=lambda _s: None,
        )
    assert "widgets.example.org" in str(exc.value) and exc.value.exit_code == 7


def test_unreachable_server_is_a_remote_error(emulator: KubeApiEmulator) -> None:
    config = emulator.kubeconfig()
    emulator.stop()
    with Kube.from_kubeconfig(config, timeout=2) as k:
        k.api.configuration.retries = 0
        with pytest.raises(KubeUnreachable) as exc:
            k.get(ObjectRef("v1", "ConfigMap", "x", "default"))
    assert emulator.url in str(exc.value) and exc.value.exit_code == 6


def test_crd_wait_polls_quickly_first_then_backs_off(kube: Kube) -> None:
    now = [0.0]
    pauses: list[float] = []

    def sleep(s: float) -> None:
        pauses.append(s)
        now[0] += s

    with pytest.raises(Timeout):
        wait_crds_established(kube, ["widgets.example.org"], timeout=1.0,
                              clock=lambda: now[0], sleep=sleep)
    assert pauses[:6] == [0.02, 0.04, 0.08, 0.16, 0.2, 0.2]
