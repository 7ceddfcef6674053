"""Real kubectl (v1.35) and helm (v4) against the Kubernetes API emulator in their default
modes: no ``--validate=false``, no ``--disable-openapi-validation``.

kubectl's default ``--validate=strict`` reads ``/openapi/v3`` (a PATCH operation with the
``fieldValidation`` parameter tells it the server validates fields) and sends
``fieldValidation=Strict``; ``kubectl explain`` reads the v3 component schemas; ``kubectl
create`` and Helm's release Secrets send protobuf bodies; CRD validation rules (CEL) reject a
HelmRelease without a chart. Needs kubectl and helm on PATH: fails when ``CI=true`` and one is
missing, else skips with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudctl.emulate.kube_api import KubeApiEmulator
from cloudctl.kube import parse_manifests
from cloudctl.resources import read_text

Run = Callable[..., subprocess.CompletedProcess[str]]


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is required in CI (.ci/run installs it)")
        pytest.skip(f"{name} not on PATH; CI installs it (.ci/run)")
    return found


@pytest.fixture(scope="module")
def emulator() -> Iterator[KubeApiEmulator]:
    with KubeApiEmulator(workload_delay=0.05) as emu:
        emu.add_node("w1", "10.0.0.11")
        for doc in parse_manifests(read_text("flux", "gotk-components-v2.9.3.yaml"),
                                   source="gotk"):
            if doc.get("kind") == "CustomResourceDefinition":
                resp = emu.handle("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                                  {"Content-Type": "application/json"},
                                  json.dumps(doc).encode())
                assert resp.code == 201, resp.body
        emu.reconcile()
        yield emu


def _runner(tool: str, emulator: KubeApiEmulator, home: Path) -> Run:
    config = home / "kubeconfig"
    config.write_bytes(emulator.kubeconfig())
    config.chmod(0o600)
    env = {**os.environ, "KUBECONFIG": str(config), "HOME": str(home),
           "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_DATA_HOME": str(home / "data")}

    def run(*args: str, stdin: str | None = None, ok: bool = True) -> Any:
        out = subprocess.run([tool, *args], env=env, input=stdin, capture_output=True,
                             text=True, timeout=120, check=False)
        if ok:
            assert out.returncode == 0, f"{tool} {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
        return out

    run.env = env  # type: ignore[attr-defined]
    run.tool = tool  # type: ignore[attr-defined]
    return run


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def kubectl(emulator: KubeApiEmulator, home: Path) -> Run:
    return _runner(_tool("kubectl"), emulator, home)


@pytest.fixture(scope="module")
def helm(emulator: KubeApiEmulator, home: Path) -> Run:
    return _runner(_tool("helm"), emulator, home)


DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: app, image: registry.k8s.io/pause:3.10}]
"""


def test_client_side_apply_validates_against_openapi_v3(
    kubectl: Run, emulator: KubeApiEmulator
) -> None:
    out = kubectl("apply", "-f", "-", stdin=DEPLOYMENT)
    assert "deployment.apps/web created" in out.stdout
    out = kubectl("apply", "-f", "-", stdin=DEPLOYMENT.replace("replicas: 1", "replicas: 2"))
    assert "deployment.apps/web configured" in out.stdout
    got = emulator.get("apps/v1", "Deployment", "web", "default")
    assert got is not None and got["spec"]["replicas"] == 2


def test_explain_reads_builtin_and_crd_schemas(kubectl: Run) -> None:
    out = kubectl("explain", "deployment.spec.replicas")
    assert "KIND:       Deployment" in out.stdout and "FIELD: replicas <integer>" in out.stdout
    assert "Number of desired pods" in out.stdout
    out = kubectl("explain", "helmrelease.spec.chartRef")
    assert "GROUP:      helm.toolkit.fluxcd.io" in out.stdout
    assert "FIELD: chartRef <Object>" in out.stdout
    assert "ChartRef holds a reference to a source controller resource" in out.stdout
    out = kubectl("explain", "helmreleases.spec", "--recursive")
    assert "  chart\t<Object>\n" in out.stdout
    assert "      chart\t<string> -required-\n" in out.stdout  # spec.chart.spec.chart


HELMRELEASE = """\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: no-chart, namespace: default}
spec:
  interval: 5m
"""


def test_helmrelease_without_chart_is_rejected_with_the_flux_cel_message(
    kubectl: Run, emulator: KubeApiEmulator
) -> None:
    out = kubectl("apply", "-f", "-", stdin=HELMRELEASE, ok=False)
    assert out.returncode == 1
    assert out.stderr.strip() == (
        'The HelmRelease "no-chart" is invalid: spec: Invalid value: "object": '
        "either chart or chartRef must be set")
    assert emulator.get("helm.toolkit.fluxcd.io/v2", "HelmRelease", "no-chart", "default") is None
    chart = "  chart:\n    spec: {chart: podinfo, sourceRef: {kind: HelmRepository, name: p}}\n"
    out = kubectl("apply", "-f", "-", stdin=HELMRELEASE + chart)
    assert "helmrelease.helm.toolkit.fluxcd.io/no-chart created" in out.stdout


def test_kubectl_create_sends_protobuf_and_scale_uses_the_subresource(
    kubectl: Run, emulator: KubeApiEmulator
) -> None:
    out = kubectl("create", "deployment", "pb", "--image=registry.k8s.io/pause:3.10",
                  "--replicas=2", "-v=8")
    assert "deployment.apps/pb created" in out.stdout
    # request and response bodies were protobuf (client-go logs both content types)
    assert out.stderr.count("Content-Type: application/vnd.kubernetes.protobuf") >= 2
    got = emulator.get("apps/v1", "Deployment", "pb", "default")
    assert got is not None and got["spec"]["replicas"] == 2
    assert got["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "registry.k8s.io/pause:3.10")
    kubectl("create", "secret", "generic", "pb-secret", "--from-literal=token=s3cret")
    out = kubectl("get", "secret", "pb-secret", "-o", "jsonpath={.data.token}")
    assert out.stdout == "czNjcmV0"  # base64 of s3cret, through a protobuf bytes map
    kubectl("scale", "deployment", "pb", "--replicas=3")
    got = emulator.get("apps/v1", "Deployment", "pb", "default")
    assert got is not None and got["spec"]["replicas"] == 3


def _chart(root: Path) -> Path:
    chart = root / "tiny"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: tiny\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n")
    return chart


def test_helm_install_upgrade_uninstall(
    helm: Run, emulator: KubeApiEmulator, tmp_path: Path
) -> None:
    chart = _chart(tmp_path)
    helm("install", "tiny", str(chart), "--namespace", "default")
    cm = emulator.get("v1", "ConfigMap", "tiny-cm", "default")
    assert cm is not None and cm["data"] == {"greeting": "hello"}
    helm("upgrade", "tiny", str(chart), "--namespace", "default", "--set", "greeting=bye")
    cm = emulator.get("v1", "ConfigMap", "tiny-cm", "default")
    assert cm is not None and cm["data"] == {"greeting": "bye"}
    releases = json.loads(helm("list", "--namespace", "default", "-o", "json").stdout)
    assert [(r["name"], r["revision"], r["status"]) for r in releases] == [
        ("tiny", "2", "deployed")]
    # the release records are Secrets helm wrote through client-go's protobuf encoding
    stored = {s["metadata"]["name"] for s in emulator.list("v1", "Secret", "default")}
    assert {"sh.helm.release.v1.tiny.v1", "sh.helm.release.v1.tiny.v2"} <= stored
    helm("uninstall", "tiny", "--namespace", "default")
    assert emulator.get("v1", "ConfigMap", "tiny-cm", "default") is None
    assert not any(s["metadata"]["name"].startswith("sh.helm.release.v1.tiny.")
                   for s in emulator.list("v1", "Secret", "default"))


def test_chunked_request_body(emulator: KubeApiEmulator, tmp_path: Path) -> None:
    import http.client
    import ssl

    for name, data in (("ca.pem", emulator.pki.ca_pem),
                       ("client.pem", emulator.pki.client_cert_pem),
                       ("client.key", emulator.pki.client_key_pem)):
        (tmp_path / name).write_bytes(data)
    context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    context.load_cert_chain(str(tmp_path / "client.pem"), str(tmp_path / "client.key"))
    body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "chunked"}, "data": {"k": "v" * 5000}}).encode()
    chunks = [body[i:i + 1000] for i in range(0, len(body), 1000)]
    conn = http.client.HTTPSConnection(emulator.host, emulator.port, context=context)
    conn.request("POST", "/api/v1/namespaces/default/configmaps", body=iter(chunks),
                 headers={"Content-Type": "application/json"}, encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 201, resp.read()
    resp.read()
    conn.close()
    cm = emulator.get("v1", "ConfigMap", "chunked", "default")
    assert cm is not None and cm["data"]["k"] == "v" * 5000


STRICT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: strict, namespace: default}
spec:
  replicas: 1
  foo: 1
  selector: {matchLabels: {app: strict}}
  template:
    metadata: {labels: {app: strict}}
    spec:
      containers: [{name: app, image: registry.k8s.io/pause:3.10, imagePullPolicyy: x}]
"""


def test_unknown_fields_strict_warn_and_client_side_apply_directives(
    kubectl: Run, emulator: KubeApiEmulator
) -> None:
    out = kubectl("apply", "-f", "-", stdin=STRICT, ok=False)
    assert out.returncode == 1
    assert (
        'Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: '
        'unknown field "spec.foo", unknown field "spec.template.spec.containers[0]'
        '.imagePullPolicyy"') in out.stderr
    assert emulator.get("apps/v1", "Deployment", "strict", "default") is None
    out = kubectl("apply", "-f", "-", "--validate=warn", stdin=STRICT)
    assert 'Warning: unknown field "spec.foo"' in out.stderr
    got = emulator.get("apps/v1", "Deployment", "strict", "default")
    assert got is not None and "foo" not in got["spec"]
    assert got["spec"]["template"]["spec"]["containers"] == [
        {"name": "app", "image": "registry.k8s.io/pause:3.10"}]  # the item keeps its fields
    # client-side apply: a strategic merge patch with $setElementOrder and deletions
    two = STRICT.replace("  foo: 1\n", "").replace(", imagePullPolicyy: x}", "}, "
                                                   "{name: side, image: busybox}")
    kubectl("apply", "-f", "-", stdin=two)
    got = emulator.get("apps/v1", "Deployment", "strict", "default")
    assert got is not None
    assert [c["name"] for c in got["spec"]["template"]["spec"]["containers"]] == ["app", "side"]
    kubectl("apply", "-f", "-", stdin=two.replace(", {name: side, image: busybox}", ""))
    got = emulator.get("apps/v1", "Deployment", "strict", "default")
    assert got is not None
    assert [c["name"] for c in got["spec"]["template"]["spec"]["containers"]] == ["app"]
    kubectl("patch", "deployment", "strict", "-p",
            '{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"pause:2"}]}}}}')
    got = emulator.get("apps/v1", "Deployment", "strict", "default")
    assert got is not None
    assert got["spec"]["template"]["spec"]["containers"] == [{"name": "app", "image": "pause:2"}]


SESSION_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: shop, namespace: session, labels: {app: shop}}
spec:
  replicas: 2
  selector: {matchLabels: {app: shop}}
  template:
    metadata: {labels: {app: shop}}
    spec:
      containers: [{name: web, image: registry.k8s.io/pause:3.10, ports: [{containerPort: 80}]}]
"""


def test_scripted_session_as_on_a_real_server(
    kubectl: Run, helm: Run, emulator: KubeApiEmulator, tmp_path: Path
) -> None:
    """One operator session, every step in kubectl's and helm's default modes."""
    assert "namespace/session created" in kubectl("create", "namespace", "session").stdout
    # --dry-run=server: validated and answered, nothing stored
    out = kubectl("apply", "-f", "-", "--dry-run=server", stdin=SESSION_DEPLOYMENT)
    assert "deployment.apps/shop created (server dry run)" in out.stdout
    assert emulator.get("apps/v1", "Deployment", "shop", "session") is None
    # client-side apply, then server-side apply of a change
    kubectl("apply", "-f", "-", stdin=SESSION_DEPLOYMENT)
    out = kubectl("apply", "--server-side", "-f", "-",
                  stdin=SESSION_DEPLOYMENT.replace("replicas: 2", "replicas: 3"))
    assert "deployment.apps/shop serverside-applied" in out.stdout
    assert out.stderr == ""  # no conflict and kubectl's managed-fields migration accepted
    got = emulator.get("apps/v1", "Deployment", "shop", "session")
    assert got is not None and got["spec"]["replicas"] == 3
    owners = {(m["manager"], m["operation"]) for m in got["metadata"]["managedFields"]}
    assert ("kubectl", "Apply") in owners  # migrated from client-side apply by kubectl
    assert ("kubectl-client-side-apply", "Update") not in owners
    kubectl("rollout", "status", "deployment/shop", "-n", "session", "--timeout=60s")
    kubectl("wait", "--for=condition=Available", "deployment/shop", "-n", "session",
            "--timeout=60s")
    out = kubectl("get", "deployment", "shop", "-n", "session", "-o", "wide")
    header, row = out.stdout.splitlines()[:2]
    assert header.split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS",
                              "IMAGES", "SELECTOR"]
    assert row.split()[:4] == ["shop", "3/3", "3", "3"] and "app=shop" in row
    before = emulator.open_watches
    watcher = subprocess.Popen(  # kubectl get -w sees the scale-down as it happens
        [kubectl.tool, "get", "deployment", "shop", "-n", "session", "-w",  # type: ignore[attr-defined]
         "--output-watch-events"], env=kubectl.env,  # type: ignore[attr-defined]
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while emulator.open_watches <= before and time.monotonic() < deadline:
            time.sleep(0.05)
        kubectl("scale", "deployment", "shop", "-n", "session", "--replicas=1")
        kubectl("rollout", "status", "deployment/shop", "-n", "session", "--timeout=60s")
        time.sleep(0.5)
    finally:
        watcher.terminate()
        watched, _ = watcher.communicate(timeout=10)
    events = [line.split()[:3] for line in watched.splitlines()]
    assert ["EVENT", "NAME", "READY"] in events, watched
    assert ["ADDED", "shop", "3/3"] in events and ["MODIFIED", "shop", "1/1"] in events, watched
    got = emulator.get("apps/v1", "Deployment", "shop", "session")
    assert got is not None and got["spec"]["replicas"] == 1
    out = kubectl("explain", "deployment.spec.strategy.type")
    assert "FIELD: type <string>" in out.stdout
    assert kubectl("auth", "can-i", "create", "deployments", "-n", "session").stdout.strip() == (
        "yes")
    out = kubectl("describe", "node", "w1")
    assert "Name:               w1" in out.stdout
    out = kubectl("get", "events", "-n", "session")
    assert "ScalingReplicaSet" in out.stdout
    # helm, in its default mode, into the same namespace
    chart = _chart(tmp_path)
    helm("install", "shop-config", str(chart), "-n", "session")
    helm("upgrade", "shop-config", str(chart), "-n", "session", "--set", "greeting=hi")
    cm = emulator.get("v1", "ConfigMap", "shop-config-cm", "session")
    assert cm is not None and cm["data"] == {"greeting": "hi"}
    helm("uninstall", "shop-config", "-n", "session")
    assert emulator.get("v1", "ConfigMap", "shop-config-cm", "session") is None
    # what a real server refuses is refused the same way
    out = kubectl("apply", "-f", "-", stdin=HELMRELEASE.replace("default", "session"), ok=False)
    assert out.returncode == 1 and "either chart or chartRef must be set" in out.stderr
    kubectl("delete", "namespace", "session")


PRIORITY_CLASS = """\
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: platform-critical}
value: 1000000
globalDefault: false
"""


def test_apply_and_explain_of_a_group_without_a_vendored_v3_document(kubectl: Run) -> None:
    out = kubectl("apply", "-f", "-", stdin=PRIORITY_CLASS)
    assert "priorityclass.scheduling.k8s.io/platform-critical created" in out.stdout
    out = kubectl("explain", "priorityclass.value")
    assert "FIELD: value <integer>" in out.stdout


LIST = """\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: listed-a, namespace: default}
  data: {k: v}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: listed-b, namespace: default}
  data: {k: v}
"""

NO_CRD = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: before-crd, namespace: default}
---
apiVersion: kubevirt.io/v1
kind: KubeVirt
metadata: {name: kubevirt, namespace: default}
spec: {}
"""


def test_openapi_v2_protobuf_for_client_side_schema_validation(
    kubectl: Run, emulator: KubeApiEmulator
) -> None:
    """kubectl validates a List, and objects of a kind no CRD serves yet, on the client with
    the v2 document (gnostic protobuf), as against a real server."""
    out = kubectl("apply", "-f", "-", stdin=LIST)
    assert "configmap/listed-a created" in out.stdout and "configmap/listed-b created" in out.stdout
    out = kubectl("apply", "-f", "-", stdin=LIST.replace("data: {k: v}", "data: {k: v}\n  bogus: 1",
                                                          1), ok=False)
    assert out.returncode == 1
    assert 'unknown field "bogus"' in out.stderr  # client-side schema validation of the item
    out = kubectl("apply", "-f", "-", stdin=NO_CRD, ok=False)
    assert "configmap/before-crd created" in out.stdout
    assert 'no matches for kind "KubeVirt" in version "kubevirt.io/v1"' in out.stderr
    out = kubectl("explain", "deployment.spec.replicas", "--output=plaintext-openapiv2")
    assert "FIELD:    replicas <integer>" in out.stdout


def test_kubectl_apply_k_of_the_rendered_tree(tmp_path: Path) -> None:
    """``kubectl apply -k`` of each directory cloudctl renders, in kubectl's default mode: the
    Flux install and the platform apply cleanly; ``local/`` applies everything whose kind is
    served and names, as a real server does, each custom resource whose CRD a release installs
    later (the rendered README says to apply again once the releases are Ready)."""
    emulator = KubeApiEmulator().start()
    (tmp_path / "home").mkdir()
    kubectl = _runner(_tool("kubectl"), emulator, tmp_path / "home")
    try:
        _apply_rendered(kubectl, emulator, tmp_path)
    finally:
        emulator.stop()


def _apply_rendered(kubectl: Run, emulator: KubeApiEmulator, tmp_path: Path) -> None:
    from cloudctl.inventory import load_inventory
    from cloudctl.render.gitops import render_gitops

    inv = load_inventory(str(Path(__file__).resolve().parents[2] / "inventory.example.yaml"))
    for path, rendered in render_gitops(inv.inventory).items():
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        data = rendered.data
        target.write_bytes(data if isinstance(data, bytes) else str(data).encode())
    for directory in ("gitops/flux-system", "gitops/platform"):
        out = kubectl("apply", "-k", str(tmp_path / directory))
        assert "created" in out.stdout and out.stderr == "", out.stderr
        emulator.reconcile()  # the CRDs become Established
    out = kubectl("apply", "-k", str(tmp_path / "gitops/local"), ok=False)
    assert out.returncode == 1 and " created" in out.stdout
    errors = [line for line in out.stderr.splitlines() if line.strip()]
    assert errors and all(line.startswith("resource mapping not found for name:")
                          or line == "ensure CRDs are installed first" for line in errors), errors
