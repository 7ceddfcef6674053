"""The GitOps repository through dulwich (cloudctl.gitops): the pure change summary, what goes
where in the repository, and commits/pushes against real bare repositories made in tmp_path
(local paths and file:// URLs; no network)."""

from __future__ import annotations

from pathlib import Path

import pytest
from dulwich.objects import Commit
from dulwich.repo import Repo

from cloudctl.errors import InputError, RemoteError, SecretsError
from cloudctl.gitops import commit_tree, redact_url, summarize
from cloudctl.gitops.changes import file_changes, releases
from cloudctl.gitops.layout import cluster_record
from cloudctl.gitops.repo import Repository
from cloudctl.inventory import load_inventory
from cloudctl.inventory.models import Inventory
from cloudctl.pipeline.gitpush import push_tree
from cloudctl.render.files import Files, RenderedFile

ROOT = Path(__file__).resolve().parents[2]

HELMRELEASE = """\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {{name: {name}, namespace: flux-system}}
spec:
  interval: 10m
  chart:
    spec:
      chart: {chart}
      version: {version}
      sourceRef: {{kind: HelmRepository, name: {chart}}}
  values: {values}
"""
OCI_RELEASE = """\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: piraeus-operator, namespace: flux-system}
spec:
  chartRef: {kind: OCIRepository, name: piraeus-operator, namespace: flux-system}
"""
OCI_SOURCE = """\
apiVersion: source.toolkit.fluxcd.io/v1
kind: OCIRepository
metadata: {{name: piraeus-operator, namespace: flux-system}}
spec:
  url: oci://ghcr.io/piraeusdatastore/piraeus-operator/piraeus
  ref: {{tag: {tag}}}
"""
LOCAL_RELEASE = """\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: kubevirt, namespace: flux-system}
spec:
  chart:
    spec:
      chart: ./clusters/rack1/charts/kubevirt
      sourceRef: {kind: GitRepository, name: cloudctl-platform}
"""


def hr(name: str, version: str, values: str = "{a: 1}", chart: str | None = None) -> bytes:
    return HELMRELEASE.format(name=name, chart=chart or name, version=version,
                              values=values).encode()


def snapshot(**over: bytes | None) -> dict[str, bytes]:
    base: dict[str, bytes | None] = {
        "clusters/rack1/platform/releases/cilium.yaml": hr("cilium", "1.19.6"),
        "clusters/rack1/platform/releases/kube-ovn.yaml": hr("kube-ovn", "v1.16.2"),
        "clusters/rack1/platform/releases/piraeus.yaml": OCI_RELEASE.encode(),
        "clusters/rack1/platform/sources.yaml": OCI_SOURCE.format(tag="2.8.1").encode(),
        "clusters/rack1/platform/releases/kubevirt.yaml": LOCAL_RELEASE.encode(),
        "clusters/rack1/charts/kubevirt/Chart.yaml": b"name: kubevirt\nversion: 1.8.4\n",
        "clusters/rack1/charts/kubevirt/templates/cr.yaml": b"{{ .Values.x }}\n",
    }
    base.update({k.replace("__", "/"): v for k, v in over.items()})
    return {k: v for k, v in base.items() if v is not None}


# --------------------------------------------------------------------------- pure summary


def test_summary_of_identical_snapshots_is_empty() -> None:
    s = summarize(snapshot(), snapshot())
    assert s.empty and s.lines == () and s.files == ()


def test_chart_version_bump_names_the_release_and_both_versions() -> None:
    new = snapshot(**{"clusters/rack1/platform/releases/cilium.yaml": hr("cilium", "1.19.7")})
    s = summarize(snapshot(), new)
    assert [(f.kind, f.path) for f in s.files] == [
        ("modified", "clusters/rack1/platform/releases/cilium.yaml")]
    assert "Release cilium: chart cilium 1.19.6 -> 1.19.7" in s.lines
    assert s.highlights[0] == "cilium 1.19.6 -> 1.19.7"
    assert s.releases_changed == ("cilium",)
    assert not any(line.startswith("Values changed") for line in s.lines)


def test_values_change_is_per_release_and_never_shows_the_values() -> None:
    new = snapshot(**{"clusters/rack1/platform/releases/kube-ovn.yaml":
                      hr("kube-ovn", "v1.16.2", values="{a: 2, password: hunter2}")})
    s = summarize(snapshot(), new)
    assert "Values changed: kube-ovn" in s.lines
    assert not any("Release kube-ovn: chart" in line for line in s.lines)
    assert "hunter2" not in "\n".join(s.lines + s.highlights)


def test_oci_tag_and_local_chart_versions_are_resolved() -> None:
    rel = releases(snapshot())
    assert (rel["piraeus-operator"].chart, rel["piraeus-operator"].version) == ("piraeus", "2.8.1")
    assert (rel["kubevirt"].chart, rel["kubevirt"].version) == ("kubevirt", "1.8.4")
    new = snapshot(**{"clusters/rack1/platform/sources.yaml":
                      OCI_SOURCE.format(tag="2.9.0").encode(),
                      "clusters/rack1/charts/kubevirt/Chart.yaml":
                      b"name: kubevirt\nversion: 1.9.0\n"})
    lines = summarize(snapshot(), new).lines
    assert "Release piraeus-operator: chart piraeus 2.8.1 -> 2.9.0" in lines
    assert "Release kubevirt: chart kubevirt 1.8.4 -> 1.9.0" in lines


def test_local_chart_files_changed_without_a_version_bump_are_named() -> None:
    new = snapshot(**{"clusters/rack1/charts/kubevirt/templates/cr.yaml": b"{{ .Values.y }}\n"})
    s = summarize(snapshot(), new)
    assert "Chart files changed (same chart version): kubevirt" in s.lines
    assert s.releases_changed == ("kubevirt",)


def test_release_added_and_removed() -> None:
    new = snapshot(**{"clusters/rack1/platform/releases/kube-ovn.yaml": None,
                      "clusters/rack1/platform/releases/kamaji.yaml": hr("kamaji", "1.0.0")})
    s = summarize(snapshot(), new)
    assert "Release added: kamaji (kamaji 1.0.0)" in s.lines
    assert "Release removed: kube-ovn (was kube-ovn v1.16.2)" in s.lines
    assert [f.kind for f in file_changes(snapshot(), new)] == ["added", "removed"]


def _inv(**gitops: str) -> Inventory:
    inv = load_inventory(ROOT / "inventory.example.yaml").inventory
    from cloudctl.inventory.models import GitOps

    return inv.model_copy(update={"gitops": GitOps(**{"repo": "/nonexistent", **gitops})})


def test_record_changes_name_nodes_and_versions() -> None:
    inv = _inv()
    old = {".cloudctl/rack1/cluster.yaml": cluster_record(inv)}
    nodes = [*inv.nodes[:-1], inv.nodes[0].model_copy(update={"name": "cp9"})]
    cluster = inv.cluster.model_copy(update={"talos_version": "v1.13.5",
                                             "kubernetes_version": "v1.34.0"})
    new = {".cloudctl/rack1/cluster.yaml":
           cluster_record(inv.model_copy(update={"nodes": nodes, "cluster": cluster}))}
    s = summarize(old, new)
    assert "Nodes added: cp9 (controlplane 10.20.0.11)" in s.lines
    assert "Nodes removed: worker2" in s.lines
    assert f"Talos: {inv.cluster.talos_version} -> v1.13.5" in s.lines
    assert f"Kubernetes: {inv.cluster.kubernetes_version} -> v1.34.0" in s.lines
    assert any(line.startswith("Installer image: ") for line in s.lines)


# --------------------------------------------------------------------------- repository


def bare(tmp: Path, name: str = "remote.git") -> Path:
    path = tmp / name
    Repo.init_bare(str(path), mkdir=True, default_branch=b"main")
    return path


def tree_files(repo_path: Path, ref: bytes = b"refs/heads/main") -> dict[str, bytes]:
    from dulwich.object_store import iter_tree_contents

    with Repo(str(repo_path)) as repo:
        commit = repo[repo.refs[ref]]
        assert isinstance(commit, Commit)
        out = {}
        for e in iter_tree_contents(repo.object_store, commit.tree):
            assert e.path is not None and e.sha is not None
            out[e.path.decode()] = repo.object_store[e.sha].as_raw_string()
        return out


def head(repo_path: Path) -> bytes | None:
    with Repo(str(repo_path)) as repo:
        return repo.refs.as_dict().get(b"refs/heads/main")


def files(**over: bytes | None) -> Files:
    base: dict[str, bytes | None] = {
        "gitops/kustomization.yaml": b"resources: [platform]\n",
        "gitops/platform/releases/cilium.yaml": hr("cilium", "1.19.6"),
        "talos/nodes/cp1.yaml": b"machine: {token: x}\n",
    }
    base.update(over)
    out = {k: RenderedFile(v) for k, v in base.items() if v is not None}
    out["talos/talosconfig"] = RenderedFile(b"secret stuff", secret=True)
    return out


def test_commit_push_idempotent_and_only_owned_paths_change(tmp_path: Path) -> None:
    remote = bare(tmp_path)
    inv = _inv(repo=str(remote))
    first = commit_tree(inv, files(), push=True)
    assert first.commit_id is not None and first.pushed
    assert head(remote) == first.commit_id.encode()
    got = tree_files(remote)
    assert set(got) == {"clusters/rack1/kustomization.yaml",
                        "clusters/rack1/platform/releases/cilium.yaml",
                        ".cloudctl/rack1/cluster.yaml"}  # talos/ never goes to Git
    assert first.message is not None and first.message.startswith("cloudctl: rack1: render")

    # someone else's files elsewhere in the repository stay as they are
    other = Repository(f"file://{remote}", "main", tmp_path / "other-cache")
    content = {"clusters/rack1": {k[7:]: v.data for k, v in files().items()
                                  if k.startswith("gitops/")},
               ".cloudctl/rack1": {"cluster.yaml": got[".cloudctl/rack1/cluster.yaml"]},
               "docs": {"README.md": b"hello\n"}}
    other.commit(content, lambda s, first: "docs\n", push=True)
    other.close()

    again = commit_tree(inv, files(), push=True)
    assert again.commit_id is None and not again.pushed and again.changes == ()
    assert again.head == head(remote).decode()  # type: ignore[union-attr]

    bumped = commit_tree(inv, files(**{"gitops/platform/releases/cilium.yaml":
                                       hr("cilium", "1.19.7"),
                                       "gitops/kustomization.yaml": None}), push=True)
    assert bumped.commit_id is not None and bumped.pushed
    assert [(c.kind, c.path) for c in bumped.changes] == [
        ("removed", "clusters/rack1/kustomization.yaml"),
        ("modified", "clusters/rack1/platform/releases/cilium.yaml")]
    assert "Release cilium: chart cilium 1.19.6 -> 1.19.7" in bumped.summary
    assert bumped.message is not None
    assert bumped.message.splitlines()[0] == "cloudctl: rack1: cilium 1.19.6 -> 1.19.7"
    now = tree_files(remote)
    assert now["docs/README.md"] == b"hello\n"
    assert "clusters/rack1/kustomization.yaml" not in now


def test_commit_without_push_stays_in_the_cache_until_pushed(tmp_path: Path) -> None:
    remote = bare(tmp_path)
    inv = _inv(repo=f"file://{remote}")
    cache = tmp_path / "cluster" / "gitops.git"
    local = commit_tree(inv, files(), push=False, cache=cache)
    assert local.commit_id is not None and not local.pushed and local.unpushed
    assert head(remote) is None
    # nothing new to commit, but the earlier commit is pushed
    sent = commit_tree(inv, files(), push=True, cache=cache)
    assert sent.commit_id is None and sent.pushed and not sent.unpushed
    assert head(remote) == local.commit_id.encode()


def test_a_changed_gitops_repo_never_receives_the_old_repositorys_commits(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache.git"
    old, new = bare(tmp_path, "old.git"), bare(tmp_path, "new.git")
    first = commit_tree(_inv(repo=str(old)), files(), push=False, cache=cache)
    assert first.commit_id is not None and head(old) is None
    moved = commit_tree(_inv(repo=str(new)), files(**{"gitops/x.yaml": b"x: 1\n"}), push=True,
                        cache=cache)
    assert moved.pushed and moved.commit_id not in (None, first.commit_id)
    assert any("followed another repository" in n for n in moved.notes)
    with Repo(str(new)) as repo:
        c = repo[repo.refs[b"refs/heads/main"]]
        assert isinstance(c, Commit) and c.parents == []
        assert first.commit_id.encode() not in repo.object_store


def test_unpushed_commit_superseded_when_the_remote_moved(tmp_path: Path) -> None:
    remote = bare(tmp_path)
    inv = _inv(repo=str(remote))
    commit_tree(inv, files(), push=True)
    cache = tmp_path / "cache.git"
    mine = commit_tree(inv, files(**{"gitops/extra.yaml": b"a: 1\n"}), push=False, cache=cache)
    theirs = commit_tree(inv, files(**{"gitops/other.yaml": b"b: 1\n"}), push=True)
    assert mine.commit_id and theirs.commit_id
    out = commit_tree(inv, files(**{"gitops/extra.yaml": b"a: 1\n"}), push=True, cache=cache)
    assert out.pushed and out.commit_id not in (None, mine.commit_id)
    assert any("superseded" in n for n in out.notes)
    with Repo(str(remote)) as repo:
        c = repo[repo.refs[b"refs/heads/main"]]
        assert isinstance(c, Commit) and c.parents == [theirs.commit_id.encode()]
    assert [(c.kind, c.path) for c in out.changes] == [
        ("added", "clusters/rack1/extra.yaml"), ("removed", "clusters/rack1/other.yaml")]


def test_push_refused_when_the_remote_moved_leaves_it_unchanged(tmp_path: Path) -> None:
    remote = bare(tmp_path)
    inv = _inv(repo=str(remote))
    first = commit_tree(inv, files(), push=True)
    repo = Repository(str(remote), "main", tmp_path / "cache.git")
    try:
        out = repo.commit({"clusters/rack1": {"a.yaml": b"a: 1\n"}}, lambda s, f: "x\n",
                          push=False)
        assert out.commit_id is not None
        with pytest.raises(RemoteError, match=r"moved while committing .*nothing was pushed"):
            repo._push(out.commit_id, "0" * 40)  # the remote is not where we fetched it
    finally:
        repo.close()
    assert head(remote) == first.commit_id.encode()  # type: ignore[union-attr]


def test_a_failed_push_keeps_the_commit_locally_and_the_remote_branch_as_it_was(
    tmp_path: Path,
) -> None:
    remote = bare(tmp_path)
    inv = _inv(repo=str(remote))
    cache = tmp_path / "cache.git"
    first = commit_tree(inv, files(), push=True, cache=cache)
    lock = remote / "refs" / "heads" / "main.lock"  # another writer holds the branch
    lock.write_bytes(b"")
    change = files(**{"gitops/new.yaml": b"a: 1\n"})
    with pytest.raises(RemoteError, match=r"git push .*is kept in .*cache\.git"):
        commit_tree(inv, change, push=True, cache=cache)
    assert head(remote) == first.commit_id.encode()  # type: ignore[union-attr]
    lock.unlink()
    retry = commit_tree(inv, change, push=True, cache=cache)
    assert retry.commit_id is None and retry.pushed  # the kept commit, sent now
    assert "clusters/rack1/new.yaml" in tree_files(remote)


def test_push_to_a_missing_repository_fails_cleanly(tmp_path: Path) -> None:
    inv = _inv(repo=str(tmp_path / "nowhere.git"))
    with pytest.raises(RemoteError, match=r"nowhere\.git"):
        commit_tree(inv, files(), push=True)


def test_credentials_in_the_url_are_never_shown(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://alice:pa55-w0rd@127.0.0.1:{port}/rack1.git"
    assert redact_url(url) == f"http://***@127.0.0.1:{port}/rack1.git"
    repo = Repository(url, "main", tmp_path / "cache.git")
    try:
        with pytest.raises(RemoteError) as info:
            repo.fetch()
    finally:
        repo.close()
    assert "pa55-w0rd" not in str(info.value) and "alice" not in str(info.value)
    assert f"127.0.0.1:{port}" in str(info.value)


def test_refusals_secret_files_keys_plain_bundles_and_overlaps(tmp_path: Path) -> None:
    remote = bare(tmp_path)
    inv = _inv(repo=str(remote))
    bad = files()
    bad["gitops/leak.yaml"] = RenderedFile(b"x", secret=True)
    with pytest.raises(SecretsError, match=r"refusing to commit gitops/leak\.yaml: it is marked"):
        commit_tree(inv, bad, push=True)
    pem = files(**{"gitops/key.yaml": b"-----BEGIN EC PRIVATE KEY-----\nabc\n"})
    with pytest.raises(SecretsError, match=r"gitops/key\.yaml: it holds a private key"):
        commit_tree(inv, pem, push=True)
    with pytest.raises(SecretsError, match=r"secrets\.yaml\.age: it is not age-encrypted"):
        commit_tree(inv, files(), push=True, secrets={"secrets.yaml.age": b"cluster: {}\n"})
    with pytest.raises(SecretsError, match=r"only secrets\.yaml\.age, admin\.yaml\.age"):
        commit_tree(inv, files(), push=True, secrets={"secrets.yaml": b"x"})
    with pytest.raises(InputError, match=r"gitops\.path: .*overlaps secrets/rack1/"):
        commit_tree(_inv(repo=str(remote), path="secrets"), files(), push=True)
    with pytest.raises(InputError, match=r"gitops\.branch: 'two words' is not a valid Git"):
        commit_tree(_inv(repo=str(remote), branch="two words"), files(), push=True)
    with pytest.raises(InputError, match=r"gitops.path: \(the repository root\) overlaps"):
        commit_tree(_inv(repo=str(remote), path="./"), files(), push=True)
    # a password in gitops.repo would reach Git through the rendered GitRepository URL
    url = "https://bot:t0k%2Fen@git.example.com/rack1.git"
    leaky = files(**{"gitops/flux-system/gotk-sync.yaml": f"url: {url}\n".encode()})
    with pytest.raises(SecretsError, match=r"gotk-sync\.yaml: it holds the password of gitops"):
        commit_tree(_inv(repo=url), leaky, push=False, cache=tmp_path / "c.git")
    assert head(remote) is None  # nothing was committed by any refusal


def test_push_tree_is_commit_tree_and_idempotent(tmp_path: Path) -> None:
    remote = bare(tmp_path)
    inv = _inv(repo=str(remote))
    rev = push_tree(files(), inv)
    assert head(remote) == rev.encode()
    assert push_tree(files(), inv) == rev
    bad = files()
    bad["gitops/leak.yaml"] = RenderedFile(b"x", secret=True)
    with pytest.raises(SecretsError, match=r"marked secret"):
        push_tree(bad, inv)
    assert head(remote) == rev.encode()
