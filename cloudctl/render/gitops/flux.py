"""The pinned Flux install (``flux/gotk-components-<version>.yaml``, version pinned in
``flux/platform.yaml``), patched to run before any CNI.

The vendored manifest is the unedited output of ``flux install``; every change below
is a transformation of its parsed documents, so a Flux bump is a new vendored file, not a hand
edit. Before Cilium is running there is no pod network, no Service routing (kube-proxy is
disabled, Cilium replaces it) and no cluster DNS (CoreDNS needs the CNI). So:

- every controller runs with ``hostNetwork: true`` and ``dnsPolicy: Default`` (the node's
  resolver: Git and Helm repository names resolve without CoreDNS);
- the API server is reached through KubePrism (endpoint from ``talos/preset.yaml``, the one the
  machine configs enable): ``KUBERNETES_SERVICE_HOST`` / ``KUBERNETES_SERVICE_PORT``;
- they tolerate the taints of a node without a CNI / cloud provider, and the control-plane
  taint (the first nodes may all be control planes);
- each controller listens on its own host ports (``PORTS``), since all share the node's network
  namespace; the ports are declared as hostPorts so the scheduler refuses a collision;
- controllers talk to each other over loopback: the controllers are pinned to one node
  (required pod affinity on the Flux pods, as Flux AIO runs them in one pod), source-controller
  serves artifacts on 127.0.0.1 and advertises ``127.0.0.1:<port>`` (helm-controller and
  kustomize-controller download from the advertised address), and events go to
  notification-controller on ``http://127.0.0.1:<port>/``. Binding these two to loopback also
  keeps the artifact server (Git contents) and the event endpoint off the node network;
- the flux-system namespace is labelled Pod Security ``privileged`` (Talos enforces baseline by
  default, which forbids hostNetwork).

Dropped, with the reason:

- NetworkPolicies ``allow-egress``/``allow-scraping``/``allow-webhooks``: a NetworkPolicy
  selects pods on the pod network; hostNetwork pods are not subject to it (Cilium treats them as
  the host), so they would only suggest an isolation that does not exist;
- Services ``source-controller`` and ``notification-controller``: they point at the loopback-only
  listeners and no client uses them (addresses are 127.0.0.1); ``webhook-receiver`` stays;
- image-reflector-controller and image-automation-controller (and their CRDs): the platform
  does not automate image updates, image-automation would need write access to the Git
  repository, and they are "extra" components that ``flux install`` leaves out by default.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from ...errors import RenderError
from ...preset import preset
from ...resources import read_text
from ...util.yamlcache import load_documents
from ..files import RenderedFile, text_file, to_yaml_docs
from .catalog import load_catalog


def flux_version() -> str:
    """The pinned Flux release (``flux.version`` in ``flux/platform.yaml``)."""
    version = load_catalog().flux_version
    if not version:
        raise RenderError("flux/platform.yaml: no flux.version (broken install?)")
    return version


def manifest_name() -> str:
    """File name of the vendored install manifest under ``flux/``."""
    return f"gotk-components-{flux_version()}.yaml"


CONTROLLERS = (
    "source-controller",
    "kustomize-controller",
    "helm-controller",
    "notification-controller",
)
DROPPED_CONTROLLERS = ("image-reflector-controller", "image-automation-controller")
DROPPED_CRD_GROUPS = ("image.toolkit.fluxcd.io",)
DROPPED_SERVICES = ("source-controller", "notification-controller")

# Host ports per controller. 9790-9796 and 9690-9693 are free on a Talos node running this
# platform (see RESERVED_HOST_PORTS); the container port names are upstream's.
PORTS: dict[str, dict[str, int]] = {
    "source-controller": {"http": 9790, "http-prom": 9791, "healthz": 9792},
    "kustomize-controller": {"http-prom": 9793, "healthz": 9794},
    "helm-controller": {"http-prom": 9795, "healthz": 9796},
    "notification-controller": {
        "http": 9690,
        "http-webhook": 9691,
        "http-prom": 9692,
        "healthz": 9693,
    },
}
# listeners bound to loopback only (name of the container port)
LOOPBACK = {"source-controller": ("http",), "notification-controller": ("http",)}

# Ports other components of a cloudctl node listen on in the host network namespace.
RESERVED_HOST_PORTS: dict[str, tuple[int, ...]] = {
    "talos apid/trustd": (50000, 50001),
    "kubelet": (10248, 10250),
    "kube-apiserver / KubePrism": (6443, preset().kube_prism.port),
    "etcd": (2379, 2380, 2381),
    "kube-controller-manager / kube-scheduler": (10257, 10259),
    "cilium agent/operator/envoy/hubble": (
        4240,
        4244,
        9234,
        9876,
        9878,
        9879,
        9890,
        9891,
        9962,
        9963,
        9964,
        9965,
    ),
    "kube-ovn / OVN": (6641, 6642, 6643, 6644, 10660, 10661, 10665),
    "metallb speaker / FRR (BGP)": (179, 7472, 7473, 7946),
    "linstor satellite / DRBD": (3366, 3367, *range(7000, 8000)),
    "node-exporter": (9100,),
}

TOLERATIONS: list[dict[str, str]] = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists"},
    {"key": "node.kubernetes.io/network-unavailable", "operator": "Exists"},
    {"key": "node.cilium.io/agent-not-ready", "operator": "Exists"},
    {"key": "node.cloudprovider.kubernetes.io/uninitialized", "operator": "Exists"},
    {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
]

FLUX_POD_SELECTOR = {
    "app.kubernetes.io/part-of": "flux",
    "app.kubernetes.io/instance": "flux-system",
}

PSA_PRIVILEGED = {
    "pod-security.kubernetes.io/enforce": "privileged",
    "pod-security.kubernetes.io/audit": "privileged",
    "pod-security.kubernetes.io/warn": "privileged",
}


@functools.cache
def _parsed() -> tuple[dict[str, Any], ...]:
    manifest = manifest_name()
    docs = [d for d in load_documents(read_text("flux", manifest)) if d]
    if not any(d.get("kind") == "Deployment" for d in docs):
        raise RenderError(f"flux/{manifest}: no Deployments (not a Flux install manifest)")
    return tuple(docs)


def vendored_documents() -> list[dict[str, Any]]:
    """The parsed, unpatched install manifest (a fresh copy each call)."""
    return copy.deepcopy(list(_parsed()))


def _set_arg(args: list[str], flag: str, value: str) -> list[str]:
    prefix = f"--{flag}="
    out = [a for a in args if not a.startswith(prefix)]
    out.append(prefix + value)
    return out


def _controller_args(name: str, args: list[str]) -> list[str]:
    ports = PORTS[name]
    args = _set_arg(args, "metrics-addr", f":{ports['http-prom']}")
    args = _set_arg(args, "health-addr", f":{ports['healthz']}")
    events = f"http://127.0.0.1:{PORTS['notification-controller']['http']}/"
    if name == "source-controller":
        args = _set_arg(args, "storage-addr", f"127.0.0.1:{ports['http']}")
        args = _set_arg(args, "storage-adv-addr", f"127.0.0.1:{ports['http']}")
    if name == "notification-controller":
        args = _set_arg(args, "events-addr", f"127.0.0.1:{ports['http']}")
        args = _set_arg(args, "receiverAddr", f":{ports['http-webhook']}")
    elif any(a.startswith("--events-addr=") for a in args):
        args = _set_arg(args, "events-addr", events)
    return args


def _patch_container(name: str, c: dict[str, Any]) -> None:
    if name not in PORTS:
        raise RenderError(f"flux/{manifest_name()}: no host ports assigned to {name}")
    c["args"] = _controller_args(name, list(c.get("args") or []))
    env = [
        e
        for e in c.get("env") or []
        if e["name"] not in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")
    ]
    prism = preset().kube_prism
    env += [
        {"name": "KUBERNETES_SERVICE_HOST", "value": prism.host},
        {"name": "KUBERNETES_SERVICE_PORT", "value": str(prism.port)},
    ]
    c["env"] = env
    declared = {p["name"] for p in c.get("ports") or []}
    missing = set(PORTS[name]) - declared
    if missing:
        raise RenderError(f"flux/{manifest_name()}: {name} declares no port(s) {sorted(missing)}")
    for p in c["ports"]:
        port = PORTS[name].get(p["name"])
        if port is None:
            raise RenderError(f"flux/{manifest_name()}: {name} port {p['name']} has no host port")
        p["containerPort"] = port
        p["hostPort"] = port
    loopback = set(LOOPBACK.get(name, ()))
    for probe_key in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = c.get(probe_key)
        if probe and "httpGet" in probe and probe["httpGet"].get("port") in loopback:
            probe["httpGet"]["host"] = "127.0.0.1"


def _patch_deployment(doc: dict[str, Any]) -> None:
    name = doc["metadata"]["name"]
    tpl = doc["spec"]["template"]
    annotations = tpl["metadata"].setdefault("annotations", {})
    if "prometheus.io/port" in annotations:
        annotations["prometheus.io/port"] = str(PORTS[name]["http-prom"])
    spec = tpl["spec"]
    spec["hostNetwork"] = True
    spec["dnsPolicy"] = "Default"
    spec["tolerations"] = copy.deepcopy(TOLERATIONS)
    spec["affinity"] = {
        "podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchLabels": dict(FLUX_POD_SELECTOR)},
                    "topologyKey": "kubernetes.io/hostname",
                }
            ]
        }
    }
    containers = spec["containers"]
    if len(containers) != 1:
        raise RenderError(
            f"flux/{manifest_name()}: {name} has {len(containers)} containers, expected 1"
        )
    _patch_container(name, containers[0])


def _keep(doc: dict[str, Any]) -> bool:
    kind, name = doc.get("kind"), doc["metadata"]["name"]
    if kind == "NetworkPolicy":
        return False
    if kind in ("Deployment", "ServiceAccount") and name in DROPPED_CONTROLLERS:
        return False
    if kind == "Service" and name in DROPPED_SERVICES:
        return False
    return not (kind == "CustomResourceDefinition" and doc["spec"]["group"] in DROPPED_CRD_GROUPS)


def flux_documents() -> list[dict[str, Any]]:
    """The patched Flux install, in the upstream document order."""
    out: list[dict[str, Any]] = []
    for doc in vendored_documents():
        if not _keep(doc):
            continue
        kind = doc["kind"]
        if kind == "Namespace":
            doc["metadata"].setdefault("labels", {}).update(PSA_PRIVILEGED)
            doc["metadata"]["labels"].pop("pod-security.kubernetes.io/warn-version", None)
        elif kind == "Deployment":
            _patch_deployment(doc)
        out.append(doc)
    names = {d["metadata"]["name"] for d in out if d["kind"] == "Deployment"}
    if names != set(CONTROLLERS):
        raise RenderError(
            f"flux/{manifest_name()}: expected controllers {CONTROLLERS}, got {sorted(names)}"
        )
    return out


def _header() -> str:
    prism = preset().kube_prism
    return f"""\
Flux {flux_version()} install (flux/{manifest_name()}),
patched by cloudctl to run before any CNI: hostNetwork, API through KubePrism
({prism.host}:{prism.port}), no-CNI tolerations, distinct host ports, loopback links
between the co-located controllers; NetworkPolicies and image automation removed.
Every change and its reason: cloudctl/render/gitops/flux.py. Generated; do not edit."""


@functools.cache
def render_flux_install() -> RenderedFile:
    """The patched install as one file (independent of the inventory, so computed once)."""
    body = to_yaml_docs(flux_documents())
    header = "".join(f"# {line}\n" for line in _header().splitlines())
    return text_file(header + "---\n" + body)
