"""Tenant clusters end to end on the emulated rack, as a user runs them (the CLI in a
subprocess, a copy of inventory.example.yaml): bootstrap with the example tenant (2 control-plane
replicas, 3 workers) -> `tenant status` Ready -> `tenant kubeconfig` -> the official
`kubernetes` client lists 3 Ready nodes in the tenant's own API (its own CA); an inventory edit
to 5 workers converges to 5, one to 2 scales down, removing the tenant deletes it and stops its
API. No secret reaches any output."""

from __future__ import annotations

import json
import shutil
import ssl
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from cloudctl.secrets import SecretsStore

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "from cloudctl.cli import main; main()"]


class Work:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.inventory = root / "inventory.yaml"
        shutil.copy(REPO / "inventory.example.yaml", self.inventory)
        self.cluster_dir = root / "clusters" / "rack1"
        self.outputs: list[str] = []

    def cli(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([*CLI, *args, "-i", str(self.inventory)], cwd=self.root,
                           capture_output=True, text=True, timeout=timeout)
        self.outputs += [p.stdout, p.stderr]
        return p

    def bootstrap(self) -> subprocess.CompletedProcess[str]:
        run = self.cli("bootstrap", "--emulate", "--timeout", "120")
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        return run

    def edit(self, fn: Any) -> None:
        data = yaml.safe_load(self.inventory.read_text())
        fn(data)
        self.inventory.write_text(yaml.safe_dump(data, sort_keys=False))

    def tenant_nodes(self) -> list[tuple[str, bool]]:
        run = self.cli("tenant", "kubeconfig", "team-a")
        assert run.returncode == 0, run.stderr
        path = Path(run.stdout.strip())
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        api = config.new_client_from_config(str(path))
        try:
            nodes = client.CoreV1Api(api).list_node().items
        finally:
            api.close()
        return sorted(
            (n.metadata.name,
             any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or []))
            for n in nodes)


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Work]:
    w = Work(tmp_path)
    try:
        yield w
    finally:
        subprocess.run([*CLI, "emulate", "stop", "-i", str(w.inventory)], cwd=tmp_path,
                       capture_output=True, timeout=60)


def test_tenant_bootstrap_scale_and_remove(work: Work) -> None:
    run = work.bootstrap()
    assert "[tenants] 1 tenant(s) ready: team-a (2/2 control plane, md-0 3/3)" in run.stderr

    status = work.cli("tenant", "status", "team-a", "-o", "json")
    assert status.returncode == 0, status.stderr
    st = json.loads(status.stdout)
    assert st["ready"] and st["phase"] == "Provisioned"
    assert st["controlPlane"] == {"ready": True, "replicas": "2/2"}
    assert st["pools"] == [{"name": "md-0", "desired": 3, "replicas": 3, "ready": 3}]
    host, port = st["endpoint"].rsplit(":", 1)

    nodes = work.tenant_nodes()
    assert len(nodes) == 3 and all(ready for _, ready in nodes), nodes
    # the tenant API has certificates of its own: the management cluster's CA does not verify it
    mgmt = yaml.safe_load((work.cluster_dir / "kubeconfig").read_text())
    ctx = ssl.create_default_context()
    import base64
    ctx.load_verify_locations(cadata=base64.b64decode(
        mgmt["clusters"][0]["cluster"]["certificate-authority-data"]).decode())
    with pytest.raises(ssl.SSLCertVerificationError), \
            __import__("socket").create_connection((host, int(port)), timeout=5) as sock, \
            ctx.wrap_socket(sock, server_hostname=host):
        pass

    # the Cluster API objects in the management cluster, as kubectl users see them
    mgmt_api = config.new_client_from_config(str(work.cluster_dir / "kubeconfig"))
    try:
        custom = client.CustomObjectsApi(mgmt_api)
        machines = custom.list_namespaced_custom_object(
            "cluster.x-k8s.io", "v1beta2", "tenant-team-a", "machines")["items"]
        vmis = custom.list_namespaced_custom_object(
            "kubevirt.io", "v1", "tenant-team-a", "virtualmachineinstances")["items"]
    finally:
        mgmt_api.close()
    assert sorted(m["status"]["nodeRef"]["name"] for m in machines) == [n for n, _ in nodes]
    assert all(m["status"]["phase"] == "Running" for m in machines)
    assert all(v["status"]["phase"] == "Running" for v in vmis) and len(vmis) == 3
    assert all(v["status"]["interfaces"][0]["ipAddress"].startswith("10.240.0.") for v in vmis)

    # scale up by an inventory edit
    work.edit(lambda d: d["tenants"][0]["workers"][0].update(replicas=5))
    plan = work.cli("bootstrap", "--emulate", "--plan")
    assert plan.returncode == 0, plan.stderr
    assert "md-0 x5" in plan.stdout + plan.stderr
    run = work.bootstrap()
    assert "md-0 5/5" in run.stderr
    nodes = work.tenant_nodes()
    assert len(nodes) == 5 and all(ready for _, ready in nodes), nodes

    # scale down
    work.edit(lambda d: d["tenants"][0]["workers"][0].update(replicas=2))
    work.bootstrap()
    assert len(work.tenant_nodes()) == 2

    # a rerun with nothing changed skips the tenant
    plan = work.cli("bootstrap", "--emulate", "--plan")
    assert "Ready (v1.35.4, control plane 2/2, md-0 x2)" in plan.stdout + plan.stderr

    # remove the tenant: its objects are deleted and its API stops
    work.edit(lambda d: d.pop("tenants"))
    run = work.bootstrap()
    assert "no tenants in the inventory" in run.stderr
    listed = work.cli("tenant", "list", "-o", "json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    with pytest.raises(OSError):
        __import__("socket").create_connection((host, int(port)), timeout=2).close()

    secrets = SecretsStore(work.root / "secrets" / "rack1").load().secret_strings()
    for out in work.outputs:
        assert not any(s in out for s in secrets)
        assert "client-key-data" not in out


def test_tenant_commands_explain_what_is_missing(work: Work) -> None:
    run = work.cli("tenant", "status", "team-a")
    assert run.returncode == 5 and "no kubeconfig" in run.stderr
    run = work.cli("tenant", "kubeconfig", "nope")
    assert run.returncode == 5  # the kubeconfig is checked first
