"""The controllers behind tenant clusters, emulated in the management cluster's API.

:class:`TenantControllers` runs inside :class:`~cloudctl.emulate.kube_reconcile.Controllers`'
pass and does what these controllers would do, each only once what it depends on exists:

- **virt-operator / cdi-operator** (once their CR is Deployed): the ``VirtualMachine`` and
  ``VirtualMachineInstance`` CRDs (``kubevirt.io/v1``) and ``DataVolume``
  (``cdi.kubevirt.io/v1beta1``); the **Kube-OVN chart** (its release Ready): ``Subnet``
  (``kubeovn.io/v1``). Their real schemas are generated at build or run time upstream and are
  not vendored: these CRDs keep unknown fields (the VM template a tenant renders is validated
  through the CAPK ``KubevirtMachineTemplate`` CRD, which embeds it; the Subnet by cloudctl's
  own check in ``render/tenants.py``).
- **cluster-api-operator** (its HelmRelease Ready): each ``CoreProvider``/``BootstrapProvider``/
  ``ControlPlaneProvider``/``InfrastructureProvider`` installs its provider's vendored CRDs
  (``flux/cluster-api.yaml``) and reports ``Ready`` with its version and contract. A provider
  whose version is not the pinned one is refused (``Ready=False``), as the operator fails to
  fetch components it does not have.
- **Kamaji CAPI provider**: a ``KamajiControlPlane`` gets a ``TenantControlPlane`` of the same
  name; once that is Ready it writes ``<cluster>-kubeconfig`` (key ``value``, type
  ``cluster.x-k8s.io/secret``) and its status (ready, initialized, replicas, version) and the
  control-plane endpoint into its spec.
- **Kamaji** (its HelmRelease Ready): a ``TenantControlPlane`` whose ``DataStore`` exists gets
  its own Kubernetes API: a second :class:`~cloudctl.emulate.kube_api.KubeApiEmulator` on
  loopback with its own CA, serving the tenant's version; ``<name>-admin-kubeconfig`` (key
  ``admin.conf``) holds its admin kubeconfig. The addons become objects of that API (CoreDNS
  Deployment, kube-proxy and konnectivity-agent DaemonSets in kube-system). A missing DataStore
  keeps it NotReady with Kamaji's reason.
- **CAPK**: ``KubevirtCluster`` ready; each ``KubevirtMachine`` gets a ``VirtualMachine`` and
  its ``VirtualMachineInstance`` (Running, an address of the tenant's Kube-OVN subnet, the
  pool's CPU and memory), DataVolumes imported first when the template has them.
- **Cluster API core**: a ``MachineDeployment`` owns one ``MachineSet`` per template, which
  owns ``replicas`` ``Machine`` objects, each with a ``KubeadmConfig`` and a ``KubevirtMachine``
  from the templates; a Machine is Running once its VM runs and its Node joined the tenant API
  (the kubelet registers; it is Ready once the tenant's CNI release is Ready: a HelmRelease in
  the management cluster whose ``kubeConfig`` is the tenant's kubeconfig Secret). Scaling down
  deletes the newest Machines with their VMs and Nodes. ``Cluster`` and ``MachineDeployment``
  and ``MachineHealthCheck`` report v1beta2 status (phase, conditions, replica counts).
- Garbage collection: objects whose owner is gone are deleted (a removed tenant's machines,
  VMs and tenant API), as the Kubernetes garbage collector does through owner references.

Not emulated: kubeadm itself (the bootstrap data Secret is written, never run), Konnectivity
tunnels, the LoadBalancer address (the tenant API is served on 127.0.0.1), MachineSet rollouts
across templates (a changed template replaces the MachineSet at once), remediation by the
MachineHealthCheck (it reports health only).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import itertools
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..capi_catalog import capi_catalog
from ..resources import vendored_crds
from ..util.conditions import condition
from .kube_store import ApiError, Store, StoredObject
from .kube_types import ResourceType

if TYPE_CHECKING:
    from .kube_api import KubeApiEmulator

__all__ = ["TenantApi", "TenantControllers"]


CAPI = "cluster.x-k8s.io/v1beta2"
CLUSTER_LABEL = "cluster.x-k8s.io/cluster-name"
DEPLOYMENT_LABEL = "cluster.x-k8s.io/deployment-name"
SET_LABEL = "cluster.x-k8s.io/set-name"
VM_API = "kubevirt.io/v1"
KCP_API = "controlplane.cluster.x-k8s.io/v1alpha2"
TCP_API = "kamaji.clastix.io/v1alpha1"
INFRA_API = "infrastructure.cluster.x-k8s.io/v1alpha1"
BOOTSTRAP_API = "bootstrap.cluster.x-k8s.io/v1beta2"
OPERATOR_API = "operator.cluster.x-k8s.io/v1alpha2"
PROVIDER_KINDS = ("CoreProvider", "BootstrapProvider", "ControlPlaneProvider",
                  "InfrastructureProvider")


def _open_crd(group: str, version: str, kind: str, plural: str, short: list[str],
              scope: str = "Namespaced") -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}",
                     "annotations": {"cloudctl.io/emulated": "schema not vendored"}},
        "spec": {
            "group": group,
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural,
                      "singular": kind.lower(), "shortNames": short},
            "scope": scope,
            "versions": [{
                "name": version, "served": True, "storage": True,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object",
                                               "x-kubernetes-preserve-unknown-fields": True}},
            }],
        },
    }


VIRT_CRDS = (
    _open_crd("kubevirt.io", "v1", "VirtualMachine", "virtualmachines", ["vm", "vms"]),
    _open_crd("kubevirt.io", "v1", "VirtualMachineInstance", "virtualmachineinstances",
              ["vmi", "vmis"]),
)
CDI_CRDS = (_open_crd("cdi.kubevirt.io", "v1beta1", "DataVolume", "datavolumes", ["dv", "dvs"]),)
KUBE_OVN_CRDS = (_open_crd("kubeovn.io", "v1", "Subnet", "subnets", [], scope="Cluster"),)


def provider_crds(kind: str, name: str) -> tuple[dict[str, Any], ...]:
    """The CRDs the pinned provider ``name`` of operator kind ``kind`` installs."""
    for p in capi_catalog().providers:
        if p.kind == kind and p.name == name:
            return tuple(c for f in p.crds for c in vendored_crds("flux", f))
    return ()


def _short(text: str, n: int = 5) -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    digest = hashlib.sha256(text.encode()).digest()
    return "".join(alphabet[b % len(alphabet)] for b in digest[:n])


_COLLECTED_GROUPS = frozenset({
    "cluster.x-k8s.io", "bootstrap.cluster.x-k8s.io", "controlplane.cluster.x-k8s.io",
    "infrastructure.cluster.x-k8s.io", "kubevirt.io", "cdi.kubevirt.io", "kamaji.clastix.io",
})


@dataclass
class TenantApi:
    """A tenant cluster's emulated Kubernetes API (one per TenantControlPlane)."""

    namespace: str
    name: str
    emulator: KubeApiEmulator

    @property
    def endpoint(self) -> tuple[str, int]:
        return self.emulator.host, self.emulator.port


def _start_api(namespace: str, name: str, version: str) -> TenantApi:
    from .kube_api import KubeApiEmulator

    emu = KubeApiEmulator(kubernetes_version=version, cluster_name=name, cni_charts=())
    emu.controllers.cni_installed = False
    emu.start()
    return TenantApi(namespace, name, emu)


def _cond(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def _owner(obj: Mapping[str, Any], controller: bool = True) -> dict[str, Any]:
    meta = obj["metadata"]
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": meta["name"],
            "uid": meta["uid"], "controller": controller, "blockOwnerDeletion": True}


@dataclass
class TenantControllers:
    store: Store
    write_status: Callable[[ResourceType, StoredObject, dict[str, Any]], None]
    is_ready: Callable[[Mapping[str, Any]], bool]
    stamp: Callable[[], str]
    start_api: Callable[[str, str, str], TenantApi] = _start_api
    apis: dict[tuple[str, str], TenantApi] = field(default_factory=dict)

    # ------------------------------------------------------------------ helpers

    def _rt(self, api_version: str, kind: str) -> ResourceType | None:
        return self.store.type_of(api_version, kind)

    def _objs(self, api_version: str, kind: str, namespace: str | None = None
              ) -> Iterator[tuple[ResourceType, StoredObject]]:
        rt = self._rt(api_version, kind)
        if rt is None:
            return
        for stored in list(self.store.iter_stored(rt)):
            if namespace is None or stored.obj["metadata"].get("namespace") == namespace:
                yield rt, stored

    def _get(self, api_version: str, kind: str, namespace: str | None, name: str
             ) -> dict[str, Any] | None:
        rt = self._rt(api_version, kind)
        if rt is None:
            return None
        stored = self.store.lookup(rt, namespace, name)
        return None if stored is None else stored.obj

    def _create(self, obj: dict[str, Any], manager: str) -> dict[str, Any] | None:
        """Create ``obj`` unless it exists; None when its kind is not served yet."""
        rt = self._rt(obj["apiVersion"], obj["kind"])
        if rt is None:
            return None
        meta = obj["metadata"]
        ns = meta.get("namespace") if rt.namespaced else None
        stored = self.store.lookup(rt, ns, meta["name"])
        if stored is not None:
            return stored.obj
        self.store.create(rt, ns, obj, manager=manager)
        found = self.store.lookup(rt, ns, meta["name"])
        return None if found is None else found.obj

    def _delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> None:
        rt = self._rt(api_version, kind)
        if rt is not None and self.store.lookup(rt, namespace, name) is not None:
            self.store.delete(rt, namespace, name)

    def _status(self, api_version: str, kind: str, obj: Mapping[str, Any],
                status: dict[str, Any]) -> None:
        rt = self._rt(api_version, kind)
        if rt is None:
            return
        meta = obj["metadata"]
        stored = self.store.lookup(rt, meta.get("namespace") if rt.namespaced else None,
                                   meta["name"])
        if stored is not None:
            self.write_status(rt, stored, status)

    def _release_ready(self, name: str) -> bool:
        hr = self._get("helm.toolkit.fluxcd.io/v2", "HelmRelease", "flux-system", name)
        return hr is not None and self.is_ready(hr)

    def _install_crds(self, crds: tuple[dict[str, Any], ...], manager: str) -> None:
        for crd in crds:
            self._create(dict(crd), manager)

    # ------------------------------------------------------------------ passes

    def reconcile(self) -> None:
        self._operators_crds()
        if self._rt(OPERATOR_API, "CoreProvider") is None and \
                self._rt(TCP_API, "TenantControlPlane") is None and not self.apis:
            return  # nothing of the Cluster API stack or Kamaji is installed
        self._providers()
        self._control_planes()
        self._tenant_control_planes()
        self._infra_clusters()
        self._machine_deployments()
        self._machine_sets()
        self._machines()
        self._tenant_cni()
        self._clusters()
        self._health_checks()
        self._collect()

    def _operators_crds(self) -> None:
        """virt-operator and cdi-operator install their CRDs once their CR is deployed; the
        Kube-OVN chart (not available offline) its Subnet CRD when its release is Ready."""
        if self._release_ready("kube-ovn"):
            self._install_crds(KUBE_OVN_CRDS, "helm-controller")
        for _, stored in self._objs("kubevirt.io/v1", "KubeVirt"):
            if (stored.obj.get("status") or {}).get("phase") == "Deployed":
                self._install_crds(VIRT_CRDS, "virt-operator")
        for _, stored in self._objs("cdi.kubevirt.io/v1beta1", "CDI"):
            if (stored.obj.get("status") or {}).get("phase") == "Deployed":
                self._install_crds(CDI_CRDS, "cdi-operator")

    def _providers(self) -> None:
        cat = capi_catalog()
        running = self._release_ready(cat.operator_release)
        pins = {(p.kind, p.name): p for p in cat.providers}
        for kind in PROVIDER_KINDS:
            for _, stored in self._objs(OPERATOR_API, kind):
                obj = stored.obj
                if not running:
                    continue  # no operator: nobody writes this status
                meta, spec = obj["metadata"], obj.get("spec") or {}
                pin = pins.get((kind, meta["name"]))
                version = str(spec.get("version") or (pin.version if pin else ""))
                gen = meta.get("generation", 1)
                if pin is None or version != pin.version:
                    known = ", ".join(f"{k} {n} {p.version}" for (k, n), p in pins.items())
                    msg = (f"failed to fetch components of {kind} {meta['name']} {version}: "
                           f"not available offline to the emulated operator (it has {known})")
                    self._status(OPERATOR_API, kind, obj, {
                        "observedGeneration": gen,
                        "conditions": [_cond("ProviderInstalled", "False",
                                             "ComponentsFetchError", msg),
                                       _cond("Ready", "False", "ComponentsFetchError", msg)]})
                    continue
                self._install_crds(provider_crds(kind, meta["name"]), "capi-operator")
                self._status(OPERATOR_API, kind, obj, {
                    "observedGeneration": gen,
                    "installedVersion": version,
                    "contract": pin.contract,
                    "conditions": [
                        _cond("PreflightCheckPassed", "True", "", ""),
                        _cond("ProviderInstalled", "True", "", ""),
                        _cond("Ready", "True", "", ""),
                    ]})

    # -------------------------------------------------------------- control plane

    def _control_planes(self) -> None:
        """The Kamaji CAPI provider: KamajiControlPlane -> TenantControlPlane (+ status)."""
        for _, stored in self._objs(KCP_API, "KamajiControlPlane"):
            kcp = stored.obj
            meta, spec = kcp["metadata"], kcp.get("spec") or {}
            ns, name = meta["namespace"], meta["name"]
            if self._rt(TCP_API, "TenantControlPlane") is None:
                continue
            replicas = int(spec.get("replicas") or 1)
            tcp_spec: dict[str, Any] = {
                "controlPlane": {
                    "deployment": {"replicas": replicas},
                    "service": {"serviceType":
                                (spec.get("network") or {}).get("serviceType", "ClusterIP")},
                },
                "kubernetes": {
                    "version": spec.get("version"),
                    "kubelet": {"cgroupfs": (spec.get("kubelet") or {}).get("cgroupfs",
                                                                            "systemd")},
                },
                "addons": {k: {} for k in ("coreDNS", "kubeProxy", "konnectivity")
                           if k in (spec.get("addons") or {})},
            }
            if spec.get("dataStoreName"):
                tcp_spec["dataStore"] = spec["dataStoreName"]
            tcp_body = {
                "apiVersion": TCP_API, "kind": "TenantControlPlane",
                "metadata": {"name": name, "namespace": ns,
                             "labels": {CLUSTER_LABEL: meta.get("labels", {}).get(
                                 CLUSTER_LABEL, name)},
                             "ownerReferences": [_owner(kcp)]},
                "spec": tcp_spec,
            }
            rt = self._rt(TCP_API, "TenantControlPlane")
            assert rt is not None
            self.store.apply(rt, ns, name, tcp_body, manager="kamaji-capi", force=True)
            tcp = self._get(TCP_API, "TenantControlPlane", ns, name) or {}
            tstatus = tcp.get("status") or {}
            version_status = (tstatus.get("kubernetesResources") or {}).get("version") or {}
            ready = version_status.get("status") == "Ready"
            cluster = (meta.get("labels") or {}).get(CLUSTER_LABEL) or self._owner_cluster(kcp)
            if ready and cluster:
                self._kubeconfig_secret(ns, cluster, tcp, kcp)
                endpoint = str(tstatus.get("controlPlaneEndpoint") or "")
                host, _, port = endpoint.rpartition(":")
                if host and (spec.get("controlPlaneEndpoint") or {}).get("host") != host:
                    kcp_rt = self._rt(KCP_API, "KamajiControlPlane")
                    assert kcp_rt is not None
                    self.store.patch(kcp_rt, ns, name, "merge", {"spec": {
                        "controlPlaneEndpoint": {"host": host, "port": int(port)}}},
                        manager="kamaji-capi")
            n_ready = replicas if ready else 0
            self._status(KCP_API, "KamajiControlPlane", kcp, {
                "ready": ready,
                "initialization": {"controlPlaneInitialized": ready},
                "replicas": replicas,
                "readyReplicas": n_ready,
                "availableReplicas": n_ready,
                "upToDateReplicas": n_ready,
                "version": spec.get("version"),
                "externalManagedControlPlane": True,
                "conditions": [
                    _cond("Ready", "True" if ready else "False",
                          "TenantControlPlaneReady" if ready else "TenantControlPlaneNotReady",
                          "" if ready else f"TenantControlPlane {ns}/{name} is not ready"),
                    _cond("Available", "True" if ready else "False",
                          "Available" if ready else "NotAvailable", ""),
                ],
            })

    def _owner_cluster(self, obj: Mapping[str, Any]) -> str | None:
        for ref in obj["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "Cluster":
                return str(ref["name"])
        ns = obj["metadata"].get("namespace")
        for _, stored in self._objs(CAPI, "Cluster", ns):
            cp = (stored.obj.get("spec") or {}).get("controlPlaneRef") or {}
            if cp.get("kind") == obj["kind"] and cp.get("name") == obj["metadata"]["name"]:
                return str(stored.obj["metadata"]["name"])
        return None

    def _kubeconfig_secret(self, ns: str, cluster: str, tcp: Mapping[str, Any],
                           owner: Mapping[str, Any]) -> None:
        api = self.apis.get((ns, tcp["metadata"]["name"]))
        if api is None:
            return
        self._secret(ns, f"{cluster}-kubeconfig", {CLUSTER_LABEL: cluster},
                     "cluster.x-k8s.io/secret", {"value": api.emulator.kubeconfig()},
                     "kamaji-capi", owner)

    def _secret(self, ns: str, name: str, labels: dict[str, str], type_: str,
                data: dict[str, bytes], manager: str, owner: Mapping[str, Any]) -> None:
        """Create or update a Secret (its content follows the tenant API, which a restarted
        emulator serves with a new port and CA)."""
        rt = self._rt("v1", "Secret")
        assert rt is not None
        body = {"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": ns, "labels": labels,
                             "ownerReferences": [_owner(owner)]},
                "type": type_,
                "data": {k: base64.b64encode(v).decode() for k, v in data.items()}}
        stored = self.store.lookup(rt, ns, name)
        if stored is None or stored.obj.get("data") != body["data"]:
            self.store.apply(rt, ns, name, body, manager=manager, force=True)

    def _tenant_control_planes(self) -> None:
        """Kamaji: a TenantControlPlane with a DataStore gets its API server."""
        kamaji = self._release_ready("kamaji")
        for _, stored in self._objs(TCP_API, "TenantControlPlane"):
            tcp = stored.obj
            if not kamaji:
                continue
            meta, spec = tcp["metadata"], tcp.get("spec") or {}
            ns, name = meta["namespace"], meta["name"]
            version = str((spec.get("kubernetes") or {}).get("version") or "")
            ds_name = str(spec.get("dataStore") or "default")
            ds = self._get(TCP_API, "DataStore", None, ds_name)
            if ds is None:
                self._status(TCP_API, "TenantControlPlane", tcp, {
                    "kubernetesResources": {"version": {"status": "Provisioning"}},
                    "storage": {"dataStoreName": ds_name},
                })
                continue
            api = self.apis.get((ns, name))
            if api is None:
                api = self.start_api(ns, name, version)
                self.apis[(ns, name)] = api
            self._addons(api, spec)
            self._secret(ns, f"{name}-admin-kubeconfig", {"kamaji.clastix.io/name": name},
                         "Opaque", {"admin.conf": api.emulator.kubeconfig()}, "kamaji", tcp)
            host, port = api.endpoint
            replicas = int(((spec.get("controlPlane") or {}).get("deployment") or {})
                           .get("replicas") or 1)
            self._status(TCP_API, "TenantControlPlane", tcp, {
                "controlPlaneEndpoint": f"{host}:{port}",
                "kubeconfig": {"admin": {"secretName": f"{name}-admin-kubeconfig"}},
                "kubernetesResources": {
                    "version": {"version": version, "status": "Ready"},
                    "deployment": {"name": name, "namespace": ns, "replicas": replicas,
                                   "readyReplicas": replicas, "availableReplicas": replicas},
                },
                "storage": {"dataStoreName": ds_name,
                            "driver": (ds.get("spec") or {}).get("driver", "etcd")},
            })

    def _addons(self, api: TenantApi, spec: Mapping[str, Any]) -> None:
        """CoreDNS, kube-proxy and konnectivity-agent in the tenant's kube-system."""
        addons = spec.get("addons") or {}
        emu = api.emulator
        objs: list[dict[str, Any]] = []

        def workload(kind: str, name: str, image: str) -> dict[str, Any]:
            body: dict[str, Any] = {
                "apiVersion": "apps/v1", "kind": kind,
                "metadata": {"name": name, "namespace": "kube-system",
                             "labels": {"k8s-app": name}},
                "spec": {"selector": {"matchLabels": {"k8s-app": name}},
                         "template": {"metadata": {"labels": {"k8s-app": name}},
                                      "spec": {"containers": [{"name": name,
                                                               "image": image}]}}},
            }
            if kind == "Deployment":
                body["spec"]["replicas"] = 2
            return body

        if "coreDNS" in addons:
            objs.append(workload("Deployment", "coredns", "registry.k8s.io/coredns/coredns"))
        if "kubeProxy" in addons:
            objs.append(workload("DaemonSet", "kube-proxy", "registry.k8s.io/kube-proxy"))
        if "konnectivity" in addons:
            objs.append(workload("DaemonSet", "konnectivity-agent",
                                 "registry.k8s.io/kas-network-proxy/proxy-agent"))
        with emu.lock:
            for obj in objs:
                rt = emu.store.type_of(obj["apiVersion"], obj["kind"])
                if rt is not None and emu.store.lookup(rt, "kube-system",
                                                       obj["metadata"]["name"]) is None:
                    emu.store.create(rt, "kube-system", obj, manager="kamaji")

    def _infra_clusters(self) -> None:
        for _, stored in self._objs(INFRA_API, "KubevirtCluster"):
            self._status(INFRA_API, "KubevirtCluster", stored.obj, {
                "ready": True,
                "conditions": [_cond("Ready", "True", "", "")],
            })

    # -------------------------------------------------------------- workers

    def _machine_deployments(self) -> None:
        for _, stored in self._objs(CAPI, "MachineDeployment"):
            md = stored.obj
            meta, spec = md["metadata"], md.get("spec") or {}
            ns = meta["namespace"]
            template = spec.get("template") or {}
            set_name = f"{meta['name']}-{_short(json.dumps(template, sort_keys=True))}"
            labels = dict((template.get("metadata") or {}).get("labels") or {})
            labels[DEPLOYMENT_LABEL] = meta["name"]
            want = int(spec["replicas"]) if spec.get("replicas") is not None else 1
            ms_rt = self._rt(CAPI, "MachineSet")
            if ms_rt is None:
                continue
            existing = self.store.lookup(ms_rt, ns, set_name)
            body = {
                "apiVersion": CAPI, "kind": "MachineSet",
                "metadata": {"name": set_name, "namespace": ns, "labels": labels,
                             "ownerReferences": [_owner(md)]},
                "spec": {
                    "clusterName": spec.get("clusterName"),
                    "replicas": want,
                    "selector": {"matchLabels": {**(spec.get("selector") or {})
                                                 .get("matchLabels", {}),
                                                 SET_LABEL: set_name}},
                    "template": {"metadata": {"labels": {**labels, SET_LABEL: set_name}},
                                 "spec": template.get("spec") or {}},
                },
            }
            if existing is None or (existing.obj.get("spec") or {}).get("replicas") != want:
                self.store.apply(ms_rt, ns, set_name, body, manager="capi-controller-manager",
                                 force=True)
            # older MachineSets of this deployment (a changed template) go away
            for _, other in self._objs(CAPI, "MachineSet", ns):
                o_meta = other.obj["metadata"]
                if o_meta["name"] != set_name and any(
                        r.get("uid") == meta["uid"] for r in o_meta.get("ownerReferences") or []):
                    self.store.delete(ms_rt, ns, o_meta["name"])
            machines = [m for _, m in self._objs(CAPI, "Machine", ns)
                        if (m.obj["metadata"].get("labels") or {}).get(DEPLOYMENT_LABEL)
                        == meta["name"]]
            ready = sum(1 for m in machines if self._machine_ready(m.obj))
            phase = ("ScalingUp" if len(machines) < want else
                     "ScalingDown" if len(machines) > want else "Running")
            self._status(CAPI, "MachineDeployment", md, {
                "observedGeneration": meta.get("generation", 1),
                "selector": ",".join(f"{k}={v}" for k, v in sorted(
                    ((spec.get("selector") or {}).get("matchLabels") or {}).items())),
                "replicas": len(machines),
                "readyReplicas": ready,
                "availableReplicas": ready,
                "upToDateReplicas": len(machines),
                "phase": phase,
                "conditions": [
                    _cond("Available", "True" if ready >= want else "False",
                          "Available" if ready >= want else "NotAvailable",
                          "" if ready >= want else f"{ready} of {want} machines ready"),
                ],
            })

    def _machine_ready(self, machine: Mapping[str, Any]) -> bool:
        ready = condition(machine, "Ready")
        return ready is not None and ready.get("status") == "True"

    def _machine_sets(self) -> None:
        for _, stored in self._objs(CAPI, "MachineSet"):
            ms = stored.obj
            meta, spec = ms["metadata"], ms.get("spec") or {}
            ns = meta["namespace"]
            want = int(spec.get("replicas") or 0)
            mine = sorted(
                (m.obj for _, m in self._objs(CAPI, "Machine", ns)
                 if (m.obj["metadata"].get("labels") or {}).get(SET_LABEL) == meta["name"]),
                key=lambda m: (m["metadata"].get("creationTimestamp", ""),
                               int(m["metadata"].get("resourceVersion", "0"))),
            )
            while len(mine) > want:  # deletion order "Random" by default; newest here
                victim = mine.pop()
                self._delete_machine(victim)
            index = 0
            while len(mine) < want:
                name = f"{meta['name']}-{_short(meta['name'] + str(index))}"
                index += 1
                if any(m["metadata"]["name"] == name for m in mine):
                    continue
                created = self._create_machine(ms, name)
                if created is None:
                    break
                mine.append(created)
            ready = sum(1 for m in mine if self._machine_ready(m))
            self._status(CAPI, "MachineSet", ms, {
                "observedGeneration": meta.get("generation", 1),
                "replicas": len(mine), "readyReplicas": ready, "availableReplicas": ready,
                "upToDateReplicas": len(mine),
            })

    def _create_machine(self, ms: Mapping[str, Any], name: str) -> dict[str, Any] | None:
        meta, spec = ms["metadata"], ms.get("spec") or {}
        ns = meta["namespace"]
        tmpl = spec.get("template") or {}
        mspec = dict(tmpl.get("spec") or {})
        labels = dict((tmpl.get("metadata") or {}).get("labels") or {})
        boot_ref = (mspec.get("bootstrap") or {}).get("configRef") or {}
        infra_ref = mspec.get("infrastructureRef") or {}
        boot_tmpl = self._get(BOOTSTRAP_API, "KubeadmConfigTemplate", ns, boot_ref.get("name", ""))
        infra_tmpl = self._get(INFRA_API, "KubevirtMachineTemplate", ns,
                               infra_ref.get("name", ""))
        if boot_tmpl is None or infra_tmpl is None:
            return None  # templates not there yet: CAPI waits for them
        machine = self._create({
            "apiVersion": CAPI, "kind": "Machine",
            "metadata": {"name": name, "namespace": ns, "labels": labels,
                         "ownerReferences": [_owner(ms)]},
            "spec": {
                "clusterName": mspec.get("clusterName"),
                "version": mspec.get("version"),
                "bootstrap": {"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io",
                                            "kind": "KubeadmConfig", "name": name}},
                "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io",
                                      "kind": "KubevirtMachine", "name": name},
            },
        }, "capi-controller-manager")
        if machine is None:
            return None
        owner = [_owner(machine)]
        self._create({
            "apiVersion": BOOTSTRAP_API, "kind": "KubeadmConfig",
            "metadata": {"name": name, "namespace": ns, "labels": labels,
                         "ownerReferences": owner},
            "spec": ((boot_tmpl.get("spec") or {}).get("template") or {}).get("spec") or {},
        }, "capi-controller-manager")
        self._create({
            "apiVersion": INFRA_API, "kind": "KubevirtMachine",
            "metadata": {"name": name, "namespace": ns, "labels": labels,
                         "ownerReferences": owner},
            "spec": ((infra_tmpl.get("spec") or {}).get("template") or {}).get("spec") or {},
        }, "capi-controller-manager")
        return machine

    def _delete_machine(self, machine: Mapping[str, Any]) -> None:
        ns, name = machine["metadata"]["namespace"], machine["metadata"]["name"]
        api = self._tenant_api(ns, str((machine.get("spec") or {}).get("clusterName") or ""))
        if api is not None:
            api.emulator.remove_node(name)
        for api_version, kind in ((VM_API, "VirtualMachineInstance"), (VM_API, "VirtualMachine"),
                                  (INFRA_API, "KubevirtMachine"),
                                  (BOOTSTRAP_API, "KubeadmConfig"), ("v1", "Secret"),
                                  (CAPI, "Machine")):
            self._delete(api_version, kind, ns, name)

    def _tenant_api(self, ns: str, cluster: str) -> TenantApi | None:
        c = self._get(CAPI, "Cluster", ns, cluster)
        if c is None:
            return None
        cp = (c.get("spec") or {}).get("controlPlaneRef") or {}
        return self.apis.get((ns, str(cp.get("name") or "")))

    def _subnet_address(self, ns: str, used: set[str]) -> str:
        for _, stored in self._objs("kubeovn.io/v1", "Subnet"):
            spec = stored.obj.get("spec") or {}
            if ns in (spec.get("namespaces") or []):
                net = ipaddress.IPv4Network(spec["cidrBlock"])
                for host in itertools.islice(net.hosts(), 1, None):  # .1 is the gateway
                    if str(host) not in used:
                        return str(host)
        # no Kube-OVN Subnet for the namespace (the subnet CRD is not served): ovn-default
        net = ipaddress.IPv4Network("10.16.0.0/16")
        for host in itertools.islice(net.hosts(), 1, None):
            if str(host) not in used:
                return str(host)
        raise RuntimeError("no address left")

    def _machines(self) -> None:
        cpus_mem: dict[str, tuple[int, str]] = {}
        used: dict[str, set[str]] = {}
        for _, running in self._objs(VM_API, "VirtualMachineInstance"):
            ns = running.obj["metadata"]["namespace"]
            for iface in (running.obj.get("status") or {}).get("interfaces") or []:
                used.setdefault(ns, set()).add(str(iface.get("ipAddress")))
        for _, stored in self._objs(CAPI, "Machine"):
            machine = stored.obj
            meta, spec = machine["metadata"], machine.get("spec") or {}
            ns, name = meta["namespace"], meta["name"]
            kvm = self._get(INFRA_API, "KubevirtMachine", ns, name)
            cfg = self._get(BOOTSTRAP_API, "KubeadmConfig", ns, name)
            cluster = str(spec.get("clusterName") or "")
            api = self._tenant_api(ns, cluster)
            conds: list[dict[str, Any]] = []
            phase = "Pending"
            node_ready = False
            node_ref = None
            address = None
            if cfg is not None and api is not None:
                # the bootstrap provider writes the join data once the control plane is up
                self._create({"apiVersion": "v1", "kind": "Secret",
                              "metadata": {"name": name, "namespace": ns,
                                           "labels": {CLUSTER_LABEL: cluster},
                                           "ownerReferences": [_owner(cfg)]},
                              "type": "cluster.x-k8s.io/secret",
                              "data": {"format": "Y2xvdWQtY29uZmln",
                                       "value": "I2Nsb3VkLWNvbmZpZwo="}},
                             "capi-kubeadm-bootstrap")
                self._status(BOOTSTRAP_API, "KubeadmConfig", cfg, {
                    "dataSecretName": name,
                    "initialization": {"dataSecretCreated": True},
                    "conditions": [_cond("Ready", "True", "", "")]})
                phase = "Provisioning"
            if kvm is not None and phase == "Provisioning":
                vm_tmpl = (kvm.get("spec") or {}).get("virtualMachineTemplate") or {}
                vm_spec = dict(vm_tmpl.get("spec") or {})
                dom = ((vm_spec.get("template") or {}).get("spec") or {}).get("domain") or {}
                cpus_mem[name] = (int((dom.get("cpu") or {}).get("cores") or 1),
                                  str((dom.get("memory") or {}).get("guest") or "1Gi"))
                vm = self._create({
                    "apiVersion": VM_API, "kind": "VirtualMachine",
                    "metadata": {"name": name, "namespace": ns,
                                 "labels": {**(vm_tmpl.get("metadata") or {}).get("labels", {}),
                                            CLUSTER_LABEL: cluster},
                                 "ownerReferences": [_owner(kvm)]},
                    "spec": vm_spec,
                }, "capk")
                imported = self._data_volumes(ns, vm_spec, vm)
                if vm is not None and imported:
                    ip_used = used.setdefault(ns, set())
                    vmi = self._get(VM_API, "VirtualMachineInstance", ns, name)
                    if vmi is None:
                        address = self._subnet_address(ns, ip_used)
                        ip_used.add(address)
                        vmi = self._create({
                            "apiVersion": VM_API, "kind": "VirtualMachineInstance",
                            "metadata": {"name": name, "namespace": ns,
                                         "labels": {CLUSTER_LABEL: cluster,
                                                    "kubevirt.io/vm": name},
                                         "ownerReferences": [_owner(vm)]},
                            "spec": (vm_spec.get("template") or {}).get("spec") or {},
                        }, "virt-controller")
                    if vmi is not None:
                        ifaces = (vmi.get("status") or {}).get("interfaces") or []
                        address = address or (ifaces[0].get("ipAddress") if ifaces else None)
                        if address is None:
                            address = self._subnet_address(ns, ip_used)
                            ip_used.add(address)
                        self._status(VM_API, "VirtualMachineInstance", vmi, {
                            "phase": "Running",
                            "interfaces": [{"name": "default", "ipAddress": address,
                                            "ipAddresses": [address]}],
                            "conditions": [_cond("Ready", "True", "", "")],
                        })
                        self._status(VM_API, "VirtualMachine", vm, {
                            "printableStatus": "Running", "ready": True, "created": True,
                            "conditions": [_cond("Ready", "True", "", "")]})
                        self._status(INFRA_API, "KubevirtMachine", kvm, {
                            "ready": True, "nodeupdated": True,
                            "addresses": [{"type": "InternalIP", "address": address}],
                            "conditions": [_cond("Ready", "True", "", "")]})
                        phase = "Provisioned"
            if phase == "Provisioned" and api is not None and address is not None:
                api.emulator.add_node(name, address, ("worker",))
                with api.emulator.lock:
                    rt = api.emulator.store.type_of("v1", "Node")
                    assert rt is not None
                    node = api.emulator.store.lookup(rt, None, name)
                if node is not None:
                    phase, node_ref = "Running", {"name": name}
                    node_ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                                     for c in (node.obj.get("status") or {}).get("conditions")
                                     or [])
            conds = [
                _cond("BootstrapConfigReady", "True" if cfg is not None and phase != "Pending"
                      else "False", "", ""),
                _cond("InfrastructureReady", "True" if phase in ("Provisioned", "Running")
                      else "False", "", ""),
                _cond("NodeHealthy", "True" if node_ready else "False",
                      "" if node_ready else "NodeNotReady", ""),
                _cond("Ready", "True" if node_ready else "False", "", ""),
            ]
            status: dict[str, Any] = {
                "observedGeneration": meta.get("generation", 1),
                "phase": phase,
                "initialization": {"bootstrapDataSecretCreated": phase != "Pending",
                                   "infrastructureProvisioned":
                                       phase in ("Provisioned", "Running")},
                "conditions": conds,
            }
            if node_ref:
                status["nodeRef"] = node_ref
            if address:
                status["addresses"] = [{"type": "InternalIP", "address": address}]
            self._status(CAPI, "Machine", machine, status)

    def _data_volumes(self, ns: str, vm_spec: Mapping[str, Any],
                      vm: Mapping[str, Any] | None) -> bool:
        """CDI imports every DataVolume of the VM (done at once here); False while a
        DataVolume cannot be created (CDI not deployed)."""
        templates = vm_spec.get("dataVolumeTemplates") or []
        if not templates:
            return True
        if vm is None or self._rt("cdi.kubevirt.io/v1beta1", "DataVolume") is None:
            return False
        for t in templates:
            dv = self._create({
                "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
                "metadata": {"name": t["metadata"]["name"], "namespace": ns,
                             "ownerReferences": [_owner(vm)]},
                "spec": t.get("spec") or {},
            }, "virt-controller")
            if dv is not None:
                self._status("cdi.kubevirt.io/v1beta1", "DataVolume", dv, {
                    "phase": "Succeeded", "progress": "100.0%",
                    "conditions": [_cond("Ready", "True", "", "")]})
        return True

    def _tenant_cni(self) -> None:
        """A tenant's nodes have a network once a HelmRelease targeting its kubeconfig is
        Ready (the tenant's CNI, installed by helm-controller into the tenant API)."""
        ready_secrets = set()
        for _, stored in self._objs("helm.toolkit.fluxcd.io/v2", "HelmRelease"):
            hr = stored.obj
            ref = (((hr.get("spec") or {}).get("kubeConfig") or {}).get("secretRef")) or {}
            if ref and self.is_ready(hr):
                ready_secrets.add((hr["metadata"]["namespace"], ref.get("name")))
        for (ns, name), api in self.apis.items():
            tcp = self._get(TCP_API, "TenantControlPlane", ns, name)
            cluster = self._owner_cluster_of_tcp(tcp) if tcp is not None else None
            installed = cluster is not None and (ns, f"{cluster}-kubeconfig") in ready_secrets
            if api.emulator.controllers.cni_installed != installed:
                api.emulator.set_cni_installed(installed)

    def _owner_cluster_of_tcp(self, tcp: Mapping[str, Any]) -> str | None:
        labels = tcp["metadata"].get("labels") or {}
        return str(labels[CLUSTER_LABEL]) if CLUSTER_LABEL in labels else None

    # -------------------------------------------------------------- cluster, health

    def _clusters(self) -> None:
        for _, stored in self._objs(CAPI, "Cluster"):
            cluster = stored.obj
            meta, spec = cluster["metadata"], cluster.get("spec") or {}
            ns, name = meta["namespace"], meta["name"]
            cp_ref = spec.get("controlPlaneRef") or {}
            infra_ref = spec.get("infrastructureRef") or {}
            kcp = self._get(KCP_API, str(cp_ref.get("kind", "")), ns, str(cp_ref.get("name", "")))
            infra = self._get(INFRA_API, str(infra_ref.get("kind", "")), ns,
                              str(infra_ref.get("name", "")))
            infra_ready = bool(((infra or {}).get("status") or {}).get("ready"))
            kstatus = (kcp or {}).get("status") or {}
            cp_ready = bool(kstatus.get("ready"))
            endpoint = ((kcp or {}).get("spec") or {}).get("controlPlaneEndpoint") or {}
            if endpoint.get("host") and spec.get("controlPlaneEndpoint") != endpoint:
                c_rt = self._rt(CAPI, "Cluster")
                assert c_rt is not None
                self.store.patch(c_rt, ns, name, "merge",
                                 {"spec": {"controlPlaneEndpoint": endpoint}},
                                 manager="capi-controller-manager")
            desired = ready = 0
            for _, md in self._objs(CAPI, "MachineDeployment", ns):
                if (md.obj.get("spec") or {}).get("clusterName") == name:
                    desired += int((md.obj.get("spec") or {}).get("replicas") or 0)
                    ready += int((md.obj.get("status") or {}).get("readyReplicas") or 0)
            phase = ("Provisioned" if infra_ready and cp_ready else
                     "Provisioning" if infra_ready or kcp is not None else "Pending")
            available = cp_ready and infra_ready and ready >= desired
            self._status(CAPI, "Cluster", cluster, {
                "observedGeneration": meta.get("generation", 1),
                "phase": phase,
                "initialization": {"infrastructureProvisioned": infra_ready,
                                   "controlPlaneInitialized": cp_ready},
                "controlPlane": {"desiredReplicas": int(kstatus.get("replicas") or 0),
                                 "replicas": int(kstatus.get("replicas") or 0),
                                 "readyReplicas": int(kstatus.get("readyReplicas") or 0),
                                 "availableReplicas": int(kstatus.get("availableReplicas") or 0),
                                 "upToDateReplicas": int(kstatus.get("upToDateReplicas") or 0)},
                "workers": {"desiredReplicas": desired, "replicas": desired,
                            "readyReplicas": ready, "availableReplicas": ready,
                            "upToDateReplicas": ready},
                "conditions": [
                    _cond("InfrastructureReady", "True" if infra_ready else "False", "", ""),
                    _cond("ControlPlaneInitialized", "True" if cp_ready else "False", "", ""),
                    _cond("ControlPlaneAvailable", "True" if cp_ready else "False", "", ""),
                    _cond("WorkersAvailable", "True" if ready >= desired else "False", "",
                          "" if ready >= desired else f"{ready} of {desired} workers ready"),
                    _cond("Available", "True" if available else "False",
                          "Available" if available else "NotAvailable", ""),
                ],
            })

    def _health_checks(self) -> None:
        for _, stored in self._objs(CAPI, "MachineHealthCheck"):
            mhc = stored.obj
            spec = mhc.get("spec") or {}
            ns = mhc["metadata"]["namespace"]
            match = (spec.get("selector") or {}).get("matchLabels") or {}
            machines = [m.obj for _, m in self._objs(CAPI, "Machine", ns)
                        if all((m.obj["metadata"].get("labels") or {}).get(k) == v
                               for k, v in match.items())]
            healthy = sum(1 for m in machines if self._machine_ready(m))
            self._status(CAPI, "MachineHealthCheck", mhc, {
                "observedGeneration": mhc["metadata"].get("generation", 1),
                "expectedMachines": len(machines),
                "currentHealthy": healthy,
                "remediationsAllowed": max(0, int(len(machines) * 0.4) - (len(machines)
                                                                          - healthy)),
                "targets": sorted(m["metadata"]["name"] for m in machines),
            })

    def _collect(self) -> None:
        """The garbage collector: delete objects whose controller owner is gone; stop the API
        of a TenantControlPlane that is gone."""
        uids: set[str] = set()
        owned: list[tuple[ResourceType, StoredObject]] = []
        for rt in self.store.types():
            if not rt.namespaced or (rt.group not in _COLLECTED_GROUPS and rt.kind != "Secret"):
                continue
            for stored in self.store.iter_stored(rt):
                uids.add(str(stored.obj["metadata"].get("uid")))
                if stored.obj["metadata"].get("ownerReferences"):
                    owned.append((rt, stored))
        seen: set[tuple[str, str, str]] = set()
        for rt, stored in owned:
            meta = stored.obj["metadata"]
            key = (rt.group, rt.plural, f"{meta.get('namespace')}/{meta['name']}")
            if key in seen:
                continue
            seen.add(key)
            refs = meta.get("ownerReferences") or []
            if refs and not any(str(r.get("uid")) in uids for r in refs):
                if rt.kind == "Machine":
                    self._delete_machine(stored.obj)
                    continue
                with contextlib.suppress(ApiError):  # gone meanwhile
                    self.store.delete(rt, meta.get("namespace"), meta["name"])
        for api_key in list(self.apis):
            if self._get(TCP_API, "TenantControlPlane", *api_key) is None:
                self.apis.pop(api_key).emulator.stop()

    def stop(self) -> None:
        """Stop every tenant API (the management emulator stops)."""
        for api in self.apis.values():
            api.emulator.stop()
        self.apis.clear()
