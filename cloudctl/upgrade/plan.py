"""One upgrade plan across layers, from live facts against the inventory (pure).

Order of execution (each layer only once the one before is done):

1. **platform** — HelmReleases whose chart version or values differ from the rendered ones;
2. **nodes** — nodes added to the inventory (not in Kubernetes, not answering over mTLS: a
   machine waiting in maintenance mode) are booted and configured alone; Kubernetes Nodes no
   longer in the inventory are removed (drained, out of etcd if a control plane — quorum
   checked first — reset over the Talos API, deleted from Kubernetes);
3. **talos** — nodes whose running Talos version or installer image differ from the target,
   control planes first (inventory order), one node at a time;
4. **kubernetes** — control-plane components on each control plane, then the kubelet on every
   node (control planes first), one node at a time.

Preflight refusals (:attr:`UpgradePlan.problems`) name what cannot work: a Talos version not
in the catalog, a Kubernetes version the target Talos does not support (also the running one,
which the nodes keep until the Kubernetes layer), a Talos or Kubernetes minor skipped or a
downgrade, a kubelet that would be newer than the API server, and a chart version without a
vendored values schema (a warning instead with ``force``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ..catalog import TalosCatalog, minor_of, parse_version
from ..util.images import tag_of as tag_of

PLATFORM, NODES, TALOS, KUBERNETES = "platform", "nodes", "talos", "kubernetes"
LAYERS = (PLATFORM, NODES, TALOS, KUBERNETES)


@dataclass(frozen=True)
class NodeFacts:
    name: str
    role: str
    talos_version: str | None
    """Running Talos version (Version RPC); None when the node did not answer."""
    installer_image: str | None
    """``machine.install.image`` of the node's running machine config."""
    kubelet_version: str | None
    """``status.nodeInfo.kubeletVersion`` of the Kubernetes Node; None when not registered."""
    api_server_version: str | None = None
    """Control planes: the tag of ``cluster.apiServer.image`` in the running config."""
    error: str = ""


@dataclass(frozen=True)
class ReleaseFacts:
    chart: str
    version: str
    values: dict[str, Any]
    ready: bool


@dataclass(frozen=True)
class ExtraNode:
    """A Kubernetes Node the inventory no longer lists."""

    name: str
    address: str
    controlplane: bool


@dataclass(frozen=True)
class LiveFacts:
    nodes: dict[str, NodeFacts]
    releases: dict[str, ReleaseFacts] | None
    """Live HelmReleases by name; None when the Kubernetes API could not be read."""
    kube_error: str = ""
    extra: dict[str, ExtraNode] = field(default_factory=dict)
    registered: frozenset[str] = frozenset()
    """Kubernetes Node names (inventory nodes among them)."""


@dataclass(frozen=True)
class NodeTarget:
    role: str
    talos_version: str
    installer_image: str
    kubernetes_version: str


@dataclass(frozen=True)
class ReleaseTarget:
    chart: str
    version: str
    values: dict[str, Any]
    has_schema: bool


@dataclass(frozen=True)
class Change:
    layer: str
    target: str
    """Release or node name."""
    part: str
    """platform: "release"; nodes: "add" or "remove"; talos: "os"; kubernetes:
    "control-plane" or "kubelet"."""
    before: str
    after: str
    detail: str = ""

    @property
    def key(self) -> str:
        return f"{self.layer}:{self.part}:{self.target}"

    def describe(self) -> str:
        arrow = f"{self.before} -> {self.after}" if self.before != self.after else self.after
        what = {"release": "HelmRelease", "os": "Talos", "control-plane":
                "Kubernetes control plane", "kubelet": "kubelet", "add": "add node",
                "remove": "remove node"}[self.part]
        return f"{what} {self.target}: {arrow}{' (' + self.detail + ')' if self.detail else ''}"


@dataclass(frozen=True)
class UpgradePlan:
    changes: tuple[Change, ...]
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    unknown: tuple[str, ...] = field(default=())
    """Facts that could not be read (nodes down, API unreachable): the plan may be partial."""

    @property
    def nothing_to_do(self) -> bool:
        return not self.changes and not self.problems and not self.unknown

    def of(self, layer: str) -> list[Change]:
        return [c for c in self.changes if c.layer == layer]

    def as_dict(self) -> dict[str, Any]:
        return {"changes": [asdict(c) | {"key": c.key} for c in self.changes],
                "problems": list(self.problems), "warnings": list(self.warnings),
                "unknown": list(self.unknown), "nothing_to_do": self.nothing_to_do}


def _minor_tuple(v: str) -> tuple[int, int]:
    major, minor, _ = parse_version(v)
    return major, minor


def _minor_steps(before: str, after: str) -> int:
    (a_maj, a_min), (b_maj, b_min) = _minor_tuple(before), _minor_tuple(after)
    if a_maj != b_maj:
        return 99 if b_maj > a_maj else -99
    return b_min - a_min


def _platform_changes(
    releases: Mapping[str, ReleaseTarget], live: Mapping[str, ReleaseFacts] | None, *,
    force: bool,
) -> tuple[list[Change], list[str], list[str]]:
    changes: list[Change] = []
    problems: list[str] = []
    warnings: list[str] = []
    for name, want in releases.items():
        have = (live or {}).get(name)
        if have is not None and have.version == want.version and have.values == want.values \
                and have.chart == want.chart and have.ready:
            continue
        before = have.version if have is not None else "(not installed)"
        what = []
        if have is None:
            what.append("install")
        else:
            if have.version != want.version:
                what.append("chart version")
            if have.values != want.values:
                what.append("values")
            if not have.ready and not what:
                what.append("not Ready: reconcile")
        if have is not None and have.version != want.version and not want.has_schema:
            msg = (f"HelmRelease {name}: chart version {want.version} has no vendored values "
                   "schema, so its values cannot be checked before the upgrade")
            (warnings if force else problems).append(
                msg + ("" if force else " (--force upgrades anyway)"))
        changes.append(Change(PLATFORM, name, "release", before, want.version,
                              ", ".join(what)))
    return changes, problems, warnings


def plan_upgrade(
    targets: Mapping[str, NodeTarget],
    releases: Mapping[str, ReleaseTarget],
    facts: LiveFacts,
    catalog: TalosCatalog,
    *,
    force: bool = False,
) -> UpgradePlan:
    """The plan; ``targets`` in inventory order."""
    problems: list[str] = []
    unknown: list[str] = []
    if facts.releases is None:
        unknown.append(f"HelmReleases: {facts.kube_error or 'Kubernetes API not readable'}")
    changes, p, warnings = _platform_changes(releases, facts.releases, force=force)
    problems += p

    order = sorted(targets, key=lambda n: (targets[n].role != "controlplane",
                                          list(targets).index(n)))
    # ---------------------------------------------------------------- node lifecycle
    added = [n for n in targets if facts.releases is not None
             and n not in facts.registered and (facts.nodes.get(n) is None
                                                or facts.nodes[n].talos_version is None)]
    for name in added:
        changes.append(Change(NODES, name, "add", "(not in the cluster)",
                              targets[name].talos_version,
                              f"{targets[name].role}: boot and configure it alone"))
    for name, extra in sorted(facts.extra.items()):
        role = "control plane" if extra.controlplane else "worker"
        changes.append(Change(NODES, name, "remove", extra.address, "(removed)",
                              f"{role}: drain, "
                              + ("leave etcd, " if extra.controlplane else "")
                              + "reset, delete the Node"))
    remaining = sum(1 for t in targets.values() if t.role == "controlplane")
    if remaining == 0 and any(e.controlplane for e in facts.extra.values()):
        problems.append("the inventory lists no control plane: removing every control "
                        "plane would destroy the cluster")
    # ---------------------------------------------------------------- Talos
    talos: list[Change] = []
    for name in order:
        want, have = targets[name], facts.nodes.get(name)
        if name in added:
            continue
        if have is None or have.talos_version is None:
            unknown.append(f"node {name}: {(have.error if have else '') or 'no answer'}")
            continue
        if catalog.release(want.talos_version) is None:
            problems.append(f"Talos {want.talos_version} is not in cloudctl's catalog "
                            f"(talos/catalog.yaml)")
            continue
        if have.talos_version == want.talos_version and have.installer_image == \
                want.installer_image:
            continue
        steps = _minor_steps(have.talos_version, want.talos_version)
        if steps < 0 or (steps == 0 and parse_version(want.talos_version) <
                         parse_version(have.talos_version)):
            problems.append(f"node {name}: Talos {have.talos_version} -> {want.talos_version} "
                            "is a downgrade (use --rollback to return to a recorded version)")
            continue
        if steps > 1:
            problems.append(f"node {name}: Talos {have.talos_version} -> {want.talos_version} "
                            f"skips a minor version; upgrade to {_next_minor(have.talos_version)}"
                            " first")
            continue
        detail = "installer image" if have.talos_version == want.talos_version else ""
        talos.append(Change(TALOS, name, "os", have.talos_version, want.talos_version, detail))
    changes += talos

    # ---------------------------------------------------------------- Kubernetes
    cps = [n for n in order if targets[n].role == "controlplane"]
    api_versions = [v for n in cps if n in facts.nodes
                    for v in [facts.nodes[n].api_server_version] if v]
    live_api = min(api_versions, key=parse_version) if api_versions else None
    kube_target = next(iter(targets.values())).kubernetes_version if targets else ""
    talos_minor_new = catalog.minor(next(iter(targets.values())).talos_version) \
        if targets else None
    if talos_minor_new is not None:
        if not talos_minor_new.supports_kubernetes(kube_target):
            problems.append(
                f"Kubernetes {kube_target} is not supported by Talos "
                f"{minor_of(next(iter(targets.values())).talos_version)} (supports "
                f"{talos_minor_new.kubernetes_min} to {talos_minor_new.kubernetes_max})")
        if talos and live_api and not talos_minor_new.supports_kubernetes(live_api):
            problems.append(
                f"the running Kubernetes {live_api} is not supported by Talos "
                f"{minor_of(next(iter(targets.values())).talos_version)}; nodes would run "
                f"it between the Talos and the Kubernetes upgrade")
    kube: list[Change] = []
    if live_api is not None and kube_target:
        steps = _minor_steps(live_api, kube_target)
        if steps < 0 or (steps == 0 and parse_version(kube_target) < parse_version(live_api)):
            problems.append(f"Kubernetes {live_api} -> {kube_target} is a downgrade, which "
                            "Kubernetes does not support")
        elif steps > 1:
            problems.append(f"Kubernetes {live_api} -> {kube_target} skips a minor version "
                            f"(one minor at a time: {_next_minor(live_api)} first)")
        else:
            for name in order:
                have = facts.nodes.get(name)
                if have is None or have.kubelet_version is None:
                    continue
                if parse_version(have.kubelet_version) > parse_version(live_api):
                    problems.append(
                        f"node {name}: kubelet {have.kubelet_version} is newer than the API "
                        f"server {live_api} (version skew: a kubelet must never be newer)")
                elif _minor_steps(have.kubelet_version, kube_target) > 3:
                    problems.append(
                        f"node {name}: kubelet {have.kubelet_version} would be more than three "
                        f"minor versions older than the API server {kube_target}")
            for name in cps:
                have = facts.nodes.get(name)
                if have is not None and have.api_server_version and \
                        have.api_server_version != kube_target:
                    kube.append(Change(KUBERNETES, name, "control-plane",
                                       have.api_server_version, kube_target,
                                       "kube-apiserver, controller-manager, scheduler"))
            for name in order:
                have = facts.nodes.get(name)
                if have is not None and have.kubelet_version and \
                        have.kubelet_version != kube_target:
                    kube.append(Change(KUBERNETES, name, "kubelet", have.kubelet_version,
                                       kube_target))
    changes += kube
    return UpgradePlan(tuple(changes), tuple(dict.fromkeys(problems)), tuple(warnings),
                       tuple(unknown))


def _next_minor(version: str) -> str:
    major, minor = _minor_tuple(version)
    return f"v{major}.{minor + 1}"


def plan_rollback(previous: Mapping[str, Any], facts: LiveFacts,
                  order: list[str]) -> UpgradePlan:
    """Back to the versions an upgrade record holds (``previous``): each HelmRelease's chart
    version and values, each node's installer image (control planes first, ``order``). The
    Kubernetes version is not rolled back (Kubernetes does not support downgrades): a
    difference is a warning."""
    changes: list[Change] = []
    warnings: list[str] = []
    unknown: list[str] = []
    if facts.releases is None:
        unknown.append(f"HelmReleases: {facts.kube_error or 'Kubernetes API not readable'}")
    for name, was in sorted((previous.get("releases") or {}).items()):
        have = (facts.releases or {}).get(name)
        if have is None:
            if facts.releases is not None:
                warnings.append(f"HelmRelease {name} is gone: not restored")
            continue
        if have.version == was.get("version") and have.values == (was.get("values") or {}):
            continue
        what = ", ".join(x for x, changed in (("chart version", have.version != was["version"]),
                                               ("values", have.values != was.get("values")))
                         if changed)
        changes.append(Change(PLATFORM, name, "release", have.version, str(was["version"]),
                              f"rollback: {what}"))
    nodes = previous.get("nodes") or {}
    for name in order:
        was, node = nodes.get(name) or {}, facts.nodes.get(name)
        if not was.get("talos") or not was.get("installer_image"):
            continue
        if node is None or node.talos_version is None:
            unknown.append(f"node {name}: {(node.error if node else '') or 'no answer'}")
            continue
        if node.talos_version == was["talos"] and node.installer_image == was["installer_image"]:
            continue
        changes.append(Change(TALOS, name, "os", node.talos_version, str(was["talos"]),
                              f"rollback to {was['installer_image']}"))
        if node.kubelet_version and was.get("kubelet") and node.kubelet_version != was["kubelet"]:
            warnings.append(f"node {name}: kubelet {node.kubelet_version} stays (was "
                            f"{was['kubelet']}): Kubernetes is not rolled back")
    return UpgradePlan(tuple(changes), (), tuple(dict.fromkeys(warnings)), tuple(unknown))
