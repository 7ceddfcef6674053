"""Kubernetes protobuf bodies in the API emulator: the .proto parser, the generic codec (checked
against protoc's own Python code generated from the same vendored upstream files, an
independent implementation of the wire format), the JSON shape of special and embedded types,
and the HTTP layer (protobuf requests, protobuf answers when the client prefers them)."""

from __future__ import annotations

import gzip
import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from cloudctl.emulate import kube_protobuf as kp
from cloudctl.emulate.kube_api import KubeApi
from cloudctl.emulate.kube_openapi import manifest
from cloudctl.emulate.kube_proto import ProtoError, parse_files
from cloudctl.emulate.kube_reconcile import Controllers
from cloudctl.emulate.kube_store import Store

PB = "application/vnd.kubernetes.protobuf"

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"},
                 "creationTimestamp": "2026-01-02T03:04:05Z"},
    "spec": {
        "replicas": 0,
        "selector": {"matchLabels": {"app": "web"}},
        "strategy": {"type": "RollingUpdate",
                     "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [{
                    "name": "app", "image": "nginx", "args": ["-v", ""],
                    "ports": [{"containerPort": 80, "name": "http"}],
                    "resources": {"limits": {"cpu": "100m", "memory": "1Gi"}},
                    "envFrom": [{"secretRef": {"name": "creds", "optional": True}}],
                    "livenessProbe": {"httpGet": {"path": "/", "port": "http"},
                                      "periodSeconds": 5},
                }],
                "volumes": [{"name": "v", "configMap": {"name": "cm", "defaultMode": 420}}],
                "terminationGracePeriodSeconds": -1,
            },
        },
    },
}


@pytest.fixture(scope="module")
def protoc_modules(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ModuleType]]:
    """protoc (grpcio-tools, a test dependency) compiles the same vendored files."""
    pytest.importorskip("grpc_tools", reason="grpcio-tools is a test dependency")
    root = tmp_path_factory.mktemp("proto")
    src, out = root / "src", root / "out"
    base = resources.files("cloudctl.emulate").joinpath("data/kubernetes")
    files = []
    for name in manifest():
        if name.endswith(".proto"):
            path = src / name.removeprefix("proto/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(gzip.decompress(base.joinpath(f"{name}.gz").read_bytes()))
            files.append(str(path.relative_to(src)))
    out.mkdir()
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", str(src),
                    f"--python_out={out}", *files], check=True, capture_output=True)
    sys.path.insert(0, str(out))
    try:
        yield {
            "apps": importlib.import_module("k8s.io.api.apps.v1.generated_pb2"),
            "core": importlib.import_module("k8s.io.api.core.v1.generated_pb2"),
            "runtime": importlib.import_module("k8s.io.apimachinery.pkg.runtime.generated_pb2"),
        }
    finally:
        sys.path.remove(str(out))


def test_parser_reads_every_vendored_file_and_resolves_types() -> None:
    messages = kp._messages()
    assert len(messages) > 400
    pod_spec = messages["k8s.io.api.core.v1.PodSpec"]
    containers = pod_spec.by_name["containers"]
    assert containers.repeated and containers.type == "k8s.io.api.core.v1.Container"
    selector = pod_spec.by_name["nodeSelector"]
    assert selector.map_key == "string" and selector.type == "string"
    meta = messages["k8s.io.api.apps.v1.Deployment"].by_name["metadata"]
    assert meta.type == "k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def test_parser_resolves_nested_and_relative_names_and_refuses_unknown_types() -> None:
    text = """
    syntax = "proto2";
    package a.b;
    message Outer {
      message Inner { optional int64 n = 1; }
      optional Inner inner = 1 [default = 0];
      repeated .a.b.Outer.Inner many = 2;
      map<string, Inner> byName = 3;
    }
    """
    messages = parse_files([text])
    outer = messages["a.b.Outer"]
    assert {f.type for f in outer.fields} == {"a.b.Outer.Inner"}
    with pytest.raises(ProtoError, match="does not resolve"):
        parse_files(["package x; message M { optional Missing m = 1; }"])


def test_encoding_is_what_protoc_generated_code_reads(
    protoc_modules: dict[str, ModuleType],
) -> None:
    body = kp.encode(DEPLOYMENT)
    assert body.startswith(b"k8s\x00")
    unknown = protoc_modules["runtime"].Unknown()
    unknown.ParseFromString(body[4:])
    assert (unknown.typeMeta.apiVersion, unknown.typeMeta.kind) == ("apps/v1", "Deployment")
    dep = protoc_modules["apps"].Deployment()
    dep.ParseFromString(unknown.raw)
    assert dep.metadata.name == "web" and dict(dep.metadata.labels) == {"app": "web"}
    assert dep.metadata.creationTimestamp.seconds == 1767323045
    assert dep.spec.HasField("replicas") and dep.spec.replicas == 0
    surge = dep.spec.strategy.rollingUpdate.maxSurge
    assert (surge.type, surge.intVal) == (0, 1)
    unavailable = dep.spec.strategy.rollingUpdate.maxUnavailable
    assert (unavailable.type, unavailable.strVal) == (1, "25%")
    pod = dep.spec.template.spec
    assert pod.terminationGracePeriodSeconds == -1
    container = pod.containers[0]
    assert list(container.args) == ["-v", ""]
    assert container.resources.limits["memory"].string == "1Gi"
    # embedded Go structs: JSON writes their fields inline
    assert container.envFrom[0].secretRef.localObjectReference.name == "creds"
    assert container.livenessProbe.handler.httpGet.port.strVal == "http"
    assert pod.volumes[0].volumeSource.configMap.localObjectReference.name == "cm"
    assert pod.volumes[0].volumeSource.configMap.defaultMode == 420


def test_decoding_what_protoc_generated_code_writes(
    protoc_modules: dict[str, ModuleType],
) -> None:
    core = protoc_modules["core"]
    secret = core.Secret()
    secret.metadata.name = "s"
    secret.metadata.ownerReferences.add(apiVersion="v1", kind="Pod", name="p", uid="u",
                                        controller=True)
    secret.data["key"] = b"\x00\xffbinary"
    secret.stringData["plain"] = "text"
    secret.type = "Opaque"
    secret.immutable = False
    unknown = protoc_modules["runtime"].Unknown()
    unknown.typeMeta.apiVersion, unknown.typeMeta.kind = "v1", "Secret"
    unknown.raw = secret.SerializeToString()
    got = kp.decode(b"k8s\x00" + unknown.SerializeToString())
    assert got == {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "s", "ownerReferences": [
            {"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u", "controller": True}]},
        "data": {"key": "AP9iaW5hcnk="},
        "stringData": {"plain": "text"},
        "type": "Opaque",
        "immutable": False,  # a pointer field set to false is meaningful: kept
    }


def test_round_trip_of_special_types() -> None:
    assert kp.decode(kp.encode(DEPLOYMENT)) == DEPLOYMENT
    event = {
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "e", "namespace": "default"},
        "eventTime": "2026-01-02T03:04:05.123456Z",
        "series": {"count": 2, "lastObservedTime": "2026-01-02T03:04:06.000001Z"},
        "reason": "Scheduled", "action": "Binding", "reportingController": "x",
        "reportingInstance": "y", "type": "Normal",
    }
    assert kp.decode(kp.encode(event)) == event
    crd_like = {"apiVersion": "apps/v1", "kind": "ControllerRevision",
                "metadata": {"name": "r", "managedFields": [
                    {"manager": "m", "operation": "Apply", "fieldsType": "FieldsV1",
                     "fieldsV1": {"f:data": {}}}]},
                "data": {"spec": {"any": ["json", 1]}}, "revision": 3}
    assert kp.decode(kp.encode(crd_like)) == crd_like
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
              "metadata": {}, "spec": {"token": "t"},
              "status": {"user": {"username": "u", "extra": {"scopes": ["a", "b"]}}}}
    assert kp.decode(kp.encode(review)) == review


def test_names_differing_in_case_use_the_json_name() -> None:
    ingress_class = {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                     "metadata": {"name": "c"},
                     "spec": {"controller": "x", "parameters": {
                         "apiGroup": "g", "kind": "K", "name": "n"}}}
    assert kp.decode(kp.encode(ingress_class)) == ingress_class


def test_bad_bodies_are_protobuf_errors() -> None:
    with pytest.raises(kp.ProtobufError, match="k8s"):
        kp.decode(b'{"kind": "Secret"}')
    with pytest.raises(kp.ProtobufError, match="no protobuf definition"):
        kp.decode(kp.encode(DEPLOYMENT).replace(b"apps/v1", b"apps/v9"))
    with pytest.raises(kp.ProtobufError):
        kp.decode(kp.encode(DEPLOYMENT)[:60])
    with pytest.raises(kp.ProtobufError, match="no protobuf definition"):
        kp.encode({"apiVersion": "example.org/v1", "kind": "Widget"})


def test_prefers_protobuf_only_when_it_is_the_first_choice() -> None:
    assert kp.prefers_protobuf(f"{PB},application/json")
    assert not kp.prefers_protobuf(f"application/json,{PB}")
    assert not kp.prefers_protobuf("")


@pytest.fixture
def api() -> KubeApi:
    store = Store()
    return KubeApi(store, Controllers(store), clock=lambda: 0.0)


def test_api_accepts_protobuf_requests_and_answers_in_protobuf(api: KubeApi) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
              "data": {"a": "Yg=="}, "type": "Opaque"}
    headers = {"Content-Type": PB, "Accept": f"{PB},application/json"}
    resp = api.handle("POST", "/api/v1/namespaces/default/secrets?fieldManager=t",
                      headers, kp.encode(secret))
    assert resp.code == 201 and resp.content_type == PB
    created = kp.decode(resp.body)
    assert created["data"] == {"a": "Yg=="} and created["metadata"]["uid"]
    listed = api.handle("GET", "/api/v1/namespaces/default/secrets", headers, b"")
    assert listed.content_type == PB
    assert [i["metadata"]["name"] for i in kp.decode(listed.body)["items"]] == ["s"]
    plain = api.handle("GET", "/api/v1/namespaces/default/secrets/s",
                       {"Accept": "application/json"}, b"")
    assert plain.content_type == "application/json"
    assert json.loads(plain.body)["data"] == {"a": "Yg=="}
    # errors stay JSON Status (clients accept both)
    missing = api.handle("GET", "/api/v1/namespaces/default/secrets/nope", headers, b"")
    assert missing.code == 404 and missing.content_type == "application/json"
    bad = api.handle("POST", "/api/v1/namespaces/default/secrets", headers, b"garbage")
    assert bad.code == 400 and "could not be decoded" in json.loads(bad.body)["message"]


def test_first_use_loads_the_definitions_once(tmp_path: Path) -> None:
    kp._messages.cache_clear()
    kp._json_names.cache_clear()
    kp.encode(DEPLOYMENT)
    kp.encode(DEPLOYMENT)
    assert kp._messages.cache_info().misses == 1


def test_openapi_v2_in_the_gnostic_encoding_client_go_decodes(tmp_path: Path) -> None:
    """/openapi/v2 as client-go's OpenAPISchema() asks for it, read back with protoc's code
    generated from the vendored gnostic OpenAPIv2.proto (google/protobuf/any.proto from
    grpcio-tools)."""
    grpc_tools = pytest.importorskip("grpc_tools", reason="grpcio-tools is a test dependency")
    name = "proto/github.com/google/gnostic-models/openapiv2/OpenAPIv2.proto"
    base = resources.files("cloudctl.emulate").joinpath("data/kubernetes")
    src = tmp_path / "src"
    target = src / name.removeprefix("proto/")
    target.parent.mkdir(parents=True)
    target.write_bytes(gzip.decompress(base.joinpath(f"{name}.gz").read_bytes()))
    out = tmp_path / "out"
    out.mkdir()
    include = Path(grpc_tools.__file__).parent / "_proto"
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", str(src), "-I",
                    str(include), f"--python_out={out}", name.removeprefix("proto/")],
                   check=True, capture_output=True)
    sys.path.insert(0, str(out))
    try:
        gnostic = importlib.import_module(
            "github.com.google.gnostic_models.openapiv2.OpenAPIv2_pb2")
    finally:
        sys.path.remove(str(out))
    store = Store()
    api = KubeApi(store, Controllers(store), clock=lambda: 0.0)
    resp = api.handle("GET", "/openapi/v2", {
        "Accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"}, b"")
    assert resp.code == 200 and resp.content_type == kp.OPENAPI_V2_MEDIA_TYPE
    doc = gnostic.Document()
    doc.ParseFromString(resp.body)
    assert doc.swagger == "2.0" and len(doc.definitions.additional_properties) > 700
    paths = {p.name: p.value for p in doc.paths.path}
    patch = paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"].patch
    extensions = {e.name: e.value.yaml for e in patch.vendor_extension}
    assert extensions["x-kubernetes-group-version-kind"] == (
        "group: apps\nkind: Deployment\nversion: v1\n")
    query = [p.parameter.non_body_parameter.query_parameter_sub_schema.name
             for p in patch.parameters]
    assert "fieldValidation" in query and "dryRun" in query
    assert "#/parameters/body-78PwaGsr" in [p.json_reference._ref for p in patch.parameters]
    definitions = {d.name: d.value for d in doc.definitions.additional_properties}
    spec = {p.name: p.value for p in
            definitions["io.k8s.api.apps.v1.DeploymentSpec"].properties.additional_properties}
    assert list(spec["replicas"].type.value) == ["integer"]
    assert spec["selector"]._ref == (
        "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector")
    assert definitions["io.k8s.api.apps.v1.DeploymentSpec"].required == ["selector", "template"]
