"""GitOps mode end to end: ``cloudctl bootstrap --emulate`` with ``gitops.repo`` pushes the
rendered tree to a real Git server (``git http-backend`` behind Python's CGI server, on
loopback) and creates the GitRepository + Kustomization; the emulated rack's
source/kustomize-controller fetches the branch and applies the tree, so every HelmRelease —
the local charts' too — comes from Git (field manager ``kustomize-controller``)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudctl.inventory import load_inventory
from cloudctl.kube import Kube
from cloudctl.render.gitops import platform_releases
from cloudctl.secrets import SecretsStore

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory.example.yaml"
CLI = [sys.executable, "-c", "from cloudctl.cli import main; main()"]
BACKEND = Path("/usr/lib/git-core/git-http-backend")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def git_server() -> Iterator[tuple[str, Path]]:
    if shutil.which("git") is None or not BACKEND.exists():
        pytest.skip("needs git and git-http-backend")
    # the CGI server drops to nobody when run as root: its directory must be reachable
    srv = Path(tempfile.mkdtemp(prefix="cloudctl-git-"))
    srv.chmod(0o755)
    (srv / "cgi-bin").mkdir(parents=True)
    bare = srv / "rack1.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    subprocess.run(["git", "--git-dir", str(bare), "config", "http.receivepack", "true"],
                   check=True)
    (srv / "cgi-bin" / "git").symlink_to(BACKEND)
    for p in [bare, *bare.rglob("*")]:
        p.chmod(0o777 if p.is_dir() else 0o666)
    port = _free_port()
    env = {**os.environ, "GIT_PROJECT_ROOT": str(srv), "GIT_HTTP_EXPORT_ALL": "1",
           "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory",
           "GIT_CONFIG_VALUE_0": "*"}
    proc = subprocess.Popen([sys.executable, "-m", "http.server", "--cgi", "--bind",
                             "127.0.0.1", str(port)], cwd=srv, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/cgi-bin/git/rack1.git", bare
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(srv, ignore_errors=True)


def test_gitops_mode_flux_pulls_the_pushed_tree(
    tmp_path: Path, git_server: tuple[str, Path]
) -> None:
    from cloudctl.emulate.kube_helm import find_helm

    helm, how = find_helm()  # the emulated helm-controller renders the Git charts with it
    if helm is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"helm is required in CI ({how})")
        pytest.skip(f"needs helm ({how})")
    url, bare = git_server
    inv_path = tmp_path / "inventory.yaml"
    text = EXAMPLE.read_text()
    text = text.replace("# gitops:", "gitops:").replace(
        "#   repo: ssh://git@git.example.com/infra/rack1.git", f"  repo: {url}").replace(
        "#   branch: main", "  branch: main").replace(
        "#   path: clusters/{cluster}", "  path: clusters/{cluster}")
    inv_path.write_text(text)
    inv = load_inventory(inv_path).inventory
    assert inv.gitops is not None and inv.gitops.repo == url
    cluster_dir = tmp_path / "clusters" / "rack1"
    # CGIHTTPRequestHandler reads Content-Length only: keep git from chunking the push
    env = {**os.environ, "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.postBuffer",
           "GIT_CONFIG_VALUE_0": "200000000"}
    try:
        run = subprocess.run([*CLI, "bootstrap", "--emulate", "-o", "json", "--timeout", "60",
                              "-i", str(inv_path)], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=240)
        assert run.returncode == 0, run.stderr
        events = [json.loads(line) for line in run.stdout.splitlines()]
        pushed = [e for e in events if e["message"].startswith("pushed gitops/")]
        assert len(pushed) == 1
        head = subprocess.run(["git", "--git-dir", str(bare), "rev-parse", "main"],
                              capture_output=True, text=True, check=True).stdout.strip()
        assert head in pushed[0]["message"]
        tree = subprocess.run(["git", "--git-dir", str(bare), "ls-tree", "-r", "--name-only",
                               "main"], capture_output=True, text=True, check=True).stdout
        names = tree.split()
        assert "clusters/rack1/platform/releases/kubevirt.yaml" in names
        assert "clusters/rack1/flux-system/gotk-sync.yaml" in names
        assert not any("talos/" in n for n in names)  # machine configs never go to Git
        committed = subprocess.run(
            ["git", "--git-dir", str(bare), "show", "main:clusters/rack1/platform/sources.yaml"],
            capture_output=True, check=True).stdout
        assert committed == (cluster_dir / "render/gitops/platform/sources.yaml").read_bytes()

        rack = json.loads((cluster_dir / "emulator" / "rack.json").read_text())
        # the platform and (after it, once the Cluster API kinds exist) the tenants
        assert rack["gitops"]["applied"] == {"flux-system/cloudctl-platform": head,
                                             "flux-system/cloudctl-tenants": head}
        assert rack["gitops"]["errors"] == {}
        with Kube.from_kubeconfig(cluster_dir / "kubeconfig") as kube:
            hrs = kube.list("helm.toolkit.fluxcd.io/v2", "HelmRelease", namespace="flux-system")
        assert sorted(h["metadata"]["name"] for h in hrs) == sorted(
            r.name for r in platform_releases(inv))
        for h in hrs:  # applied from Git by the emulated kustomize-controller, not by cloudctl
            managers = {m["manager"] for m in h["metadata"]["managedFields"]}
            assert "kustomize-controller" in managers and "cloudctl" not in managers, managers

        # rerun: nothing new to commit, same head
        again = subprocess.run([*CLI, "bootstrap", "--emulate", "-o", "json", "-i",
                                str(inv_path)], cwd=tmp_path, env=env, capture_output=True,
                               text=True, timeout=240)
        assert again.returncode == 0, again.stderr
        assert subprocess.run(["git", "--git-dir", str(bare), "rev-list", "--count", "main"],
                              capture_output=True, text=True).stdout.strip() == "1"
        secrets = [s for s in SecretsStore(tmp_path / "secrets" / "rack1").load()
                   .secret_strings() if len(s) >= 8]
        for out in (run.stdout, run.stderr, again.stdout, again.stderr, tree,
                    (cluster_dir / "events.jsonl").read_text()):
            assert not any(s in out for s in secrets)
    finally:
        subprocess.run([*CLI, "emulate", "stop", "-i", str(inv_path)], cwd=tmp_path,
                       capture_output=True, timeout=60)


def test_gitops_upgrade_one_chart_is_one_commit_of_that_helmrelease(
    tmp_path: Path, git_server: tuple[str, Path]
) -> None:
    """Issue 9: a chart bump in GitOps mode is one commit that changes exactly that
    HelmRelease; the emulated Flux applies it and no other release's generation moves."""
    from cloudctl.emulate.kube_helm import find_helm

    helm, how = find_helm()
    if helm is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"helm is required in CI ({how})")
        pytest.skip(f"needs helm ({how})")
    url, bare = git_server
    inv_path = tmp_path / "inventory.yaml"
    inv_path.write_text(EXAMPLE.read_text().replace("# gitops:", "gitops:").replace(
        "#   repo: ssh://git@git.example.com/infra/rack1.git", f"  repo: {url}").replace(
        "#   branch: main", "  branch: main").replace(
        "#   path: clusters/{cluster}", "  path: clusters/{cluster}"))
    cluster_dir = tmp_path / "clusters" / "rack1"
    env = {**os.environ, "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.postBuffer",
           "GIT_CONFIG_VALUE_0": "200000000"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args, "-i", str(inv_path)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=240)

    def git(*args: str) -> str:
        return subprocess.run(["git", "--git-dir", str(bare), *args], capture_output=True,
                              text=True, check=True).stdout.strip()

    try:
        assert (run := cli("bootstrap", "--emulate", "--timeout", "60")).returncode == 0, \
            run.stderr
        base = git("rev-parse", "main")
        rack = json.loads((cluster_dir / "emulator" / "rack.json").read_text())
        before = {k: v["generation"] for k, v in rack["helmreleases"].items()}
        inv_path.write_text(inv_path.read_text().replace(
            "cilium: {enabled: true}", "cilium: {enabled: true, version: 1.20.0}"))
        run = cli("upgrade", "--emulate", "--timeout", "60")
        assert run.returncode == 0, run.stderr
        assert git("rev-list", "--count", "main") == "2"
        changed = git("diff", "--name-only", base, "main").split()
        assert changed == ["clusters/rack1/platform/releases/cilium.yaml"]
        assert "cilium 1.19.6 -> 1.20.0" in git("log", "-1", "--format=%B", "main")
        deadline = time.monotonic() + 30
        while True:  # the emulated kustomize-controller applies the new head
            rack = json.loads((cluster_dir / "emulator" / "rack.json").read_text())
            if rack["helmreleases"]["cilium"]["generation"] != before["cilium"] or \
                    time.monotonic() > deadline:
                break
            time.sleep(0.2)
        moved = {k for k, v in rack["helmreleases"].items() if v["generation"] != before[k]}
        assert moved == {"cilium"}
        record = json.loads((cluster_dir / "upgrade.json").read_text())
        assert record["previous"]["git_revision"] == base
        assert record["previous"]["releases"]["cilium"]["version"] == "1.19.6"
        plan = cli("upgrade", "--emulate", "--plan")
        assert plan.returncode == 0 and "nothing to do" in plan.stdout, plan.stdout
    finally:
        subprocess.run([*CLI, "emulate", "stop", "-i", str(inv_path)], cwd=tmp_path,
                       capture_output=True, timeout=60)


def test_gitops_tenants_scale_and_removal_converge_through_flux(
    tmp_path: Path, git_server: tuple[str, Path]
) -> None:
    """Issue 12: in GitOps mode a tenant is an inventory edit too: bootstrap pushes the tree,
    the Flux Kustomization cloudctl-tenants applies it; scaling is one more push; removing the
    tenant removes that Kustomization and Flux's garbage collection deletes what it applied."""
    import yaml

    from cloudctl.emulate.kube_helm import find_helm

    helm, how = find_helm()
    if helm is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"helm is required in CI ({how})")
        pytest.skip(f"needs helm ({how})")
    url, _ = git_server
    inv_path = tmp_path / "inventory.yaml"
    inv_path.write_text(EXAMPLE.read_text().replace("# gitops:", "gitops:").replace(
        "#   repo: ssh://git@git.example.com/infra/rack1.git", f"  repo: {url}").replace(
        "#   branch: main", "  branch: main").replace(
        "#   path: clusters/{cluster}", "  path: clusters/{cluster}"))
    env = {**os.environ, "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.postBuffer",
           "GIT_CONFIG_VALUE_0": "200000000"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args, "-i", str(inv_path)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=240)

    def edit(fn: Any) -> None:
        data = yaml.safe_load(inv_path.read_text())
        fn(data)
        inv_path.write_text(yaml.safe_dump(data, sort_keys=False))

    def tenants() -> list[dict[str, Any]]:
        listed = cli("tenant", "list", "-o", "json")
        assert listed.returncode == 0, listed.stderr
        return list(json.loads(listed.stdout))

    try:
        assert (run := cli("bootstrap", "--emulate", "--timeout", "60")).returncode == 0, \
            run.stderr
        assert [(t["name"], t["ready"], t["pools"][0]["ready"]) for t in tenants()] == \
            [("team-a", True, 3)]
        edit(lambda d: d["tenants"][0]["workers"][0].update(replicas=4))
        assert (run := cli("bootstrap", "--emulate", "--timeout", "60")).returncode == 0, \
            run.stderr
        assert "md-0 4/4" in run.stderr
        edit(lambda d: d.pop("tenants"))
        assert (run := cli("bootstrap", "--emulate", "--timeout", "60")).returncode == 0, \
            run.stderr
        deadline = time.monotonic() + 30
        while tenants() and time.monotonic() < deadline:  # Flux prunes on its next pass
            time.sleep(0.3)
        assert tenants() == []
        with Kube.from_kubeconfig(tmp_path / "clusters" / "rack1" / "kubeconfig") as kube:
            names = [k["metadata"]["name"] for k in
                     kube.list("kustomize.toolkit.fluxcd.io/v1", "Kustomization")]
            assert names == ["cloudctl-platform"]
            assert [n["metadata"]["name"] for n in kube.list("v1", "Namespace")
                    if n["metadata"]["name"].startswith("tenant-")] == []
    finally:
        subprocess.run([*CLI, "emulate", "stop", "-i", str(inv_path)], cwd=tmp_path,
                       capture_output=True, timeout=60)
