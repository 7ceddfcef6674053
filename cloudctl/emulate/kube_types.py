"""Resource types the Kubernetes API emulator serves, and label/field selectors.

Pure data and functions: the built-in kinds cloudctl applies (core, apps, RBAC, ...) and the
``ResourceType`` a CustomResourceDefinition adds at run time; selectors parsed as the API server
parses ``labelSelector`` (equality- and set-based) and a ``fieldSelector`` subset.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BUILTIN_TYPES",
    "ResourceType",
    "SelectorError",
    "field_selector",
    "label_selector",
]


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    namespaced: bool
    has_status: bool = True
    short_names: tuple[str, ...] = ()
    crd: str | None = None  # name of the CRD that defines it
    verbs: tuple[str, ...] | None = None  # None: the verbs of a stored kind

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def group_resource(self) -> str:
        """``deployments.apps`` / ``configmaps``: how the API server names a resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def discovery(self) -> list[dict[str, Any]]:
        """APIResource entries for ``/api/v1`` or ``/apis/<group>/<version>``."""
        verbs = list(self.verbs) if self.verbs is not None else [
            "create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        main: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": verbs,
        }
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        out = [main]
        if self.has_status and self.verbs is None:
            out.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        return out


def _t(
    gv: str, kind: str, plural: str, namespaced: bool, status: bool = True, short: str = ""
) -> ResourceType:
    group, _, version = gv.rpartition("/")
    names = tuple(s for s in short.split(",") if s)
    return ResourceType(group, version, kind, plural, namespaced, status, names)


BUILTIN_TYPES: tuple[ResourceType, ...] = (
    _t("v1", "Namespace", "namespaces", False, short="ns"),
    _t("v1", "Node", "nodes", False, short="no"),
    _t("v1", "ConfigMap", "configmaps", True, False, "cm"),
    _t("v1", "Secret", "secrets", True, False),
    _t("v1", "ServiceAccount", "serviceaccounts", True, False, "sa"),
    _t("v1", "Service", "services", True, short="svc"),
    _t("v1", "Endpoints", "endpoints", True, False, "ep"),
    _t("v1", "Pod", "pods", True, short="po"),
    _t("v1", "PersistentVolumeClaim", "persistentvolumeclaims", True, short="pvc"),
    _t("v1", "PersistentVolume", "persistentvolumes", False, short="pv"),
    _t("v1", "ResourceQuota", "resourcequotas", True, short="quota"),
    _t("v1", "LimitRange", "limitranges", True, False, "limits"),
    _t("v1", "Event", "events", True, False, "ev"),
    _t("events.k8s.io/v1", "Event", "events", True, False, "ev"),
    _t("apps/v1", "Deployment", "deployments", True, short="deploy"),
    _t("apps/v1", "DaemonSet", "daemonsets", True, short="ds"),
    _t("apps/v1", "StatefulSet", "statefulsets", True, short="sts"),
    _t("apps/v1", "ReplicaSet", "replicasets", True, short="rs"),
    _t("batch/v1", "Job", "jobs", True),
    _t("batch/v1", "CronJob", "cronjobs", True, short="cj"),
    _t("rbac.authorization.k8s.io/v1", "Role", "roles", True, False),
    _t("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", True, False),
    _t("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", False, False),
    _t("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings", False, False),
    _t("scheduling.k8s.io/v1", "PriorityClass", "priorityclasses", False, False, "pc"),
    _t("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", True, False, "netpol"),
    _t("networking.k8s.io/v1", "Ingress", "ingresses", True, short="ing"),
    _t("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", True, short="pdb"),
    _t("storage.k8s.io/v1", "StorageClass", "storageclasses", False, False, "sc"),
    _t("coordination.k8s.io/v1", "Lease", "leases", True, False),
    _t(
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        False,
        False,
    ),
    _t(
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        False,
        False,
    ),
    # reviews: created and answered, never stored (kube_auth)
    ResourceType("authorization.k8s.io", "v1", "SelfSubjectAccessReview",
                 "selfsubjectaccessreviews", False, False, verbs=("create",)),
    ResourceType("authorization.k8s.io", "v1", "SelfSubjectRulesReview",
                 "selfsubjectrulesreviews", False, False, verbs=("create",)),
    ResourceType("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews",
                 False, False, verbs=("create",)),
    _t(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        False,
        short="crd,crds",
    ),
)


# --------------------------------------------------------------------------- selectors


class SelectorError(ValueError):
    """A selector the API server would reject (400 BadRequest)."""


Predicate = Callable[[Mapping[str, Any]], bool]

_SET_RE = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_RE = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s*(==|=|!=)\s*([A-Za-z0-9._-]*)\s*$")
_EXISTS_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9./_-]+)\s*$")


def _split_requirements(selector: str) -> list[str]:
    """Split on commas that are not inside a ``( ... )`` value set."""
    parts, depth, cur = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p for p in parts if p.strip()]


def _in(key: str, values: set[str]) -> Callable[[Mapping[str, str]], bool]:
    return lambda labels: labels.get(key) in values


def _not_in(key: str, values: set[str]) -> Callable[[Mapping[str, str]], bool]:
    return lambda labels: labels.get(key) not in values


def _exists(key: str, present: bool) -> Callable[[Mapping[str, str]], bool]:
    return lambda labels: (key in labels) == present


def label_selector(selector: str) -> Predicate:
    """A predicate over an object's ``metadata.labels`` for a ``labelSelector`` string."""
    reqs: list[Callable[[Mapping[str, str]], bool]] = []
    for raw in _split_requirements(selector):
        if m := _SET_RE.match(raw):
            key, op = m.group(1), m.group(2)
            values = {v.strip() for v in m.group(3).split(",") if v.strip()}
            reqs.append(_in(key, values) if op == "in" else _not_in(key, values))
        elif m := _EQ_RE.match(raw):
            key, op, value = m.groups()
            reqs.append(_not_in(key, {value}) if op == "!=" else _in(key, {value}))
        elif m := _EXISTS_RE.match(raw):
            neg, key = m.groups()
            reqs.append(_exists(key, present=not neg))
        else:
            raise SelectorError(f"unable to parse requirement: {raw.strip()!r}")

    def match(obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(r(labels) for r in reqs)

    return match


def _at(*path: str) -> Callable[[Mapping[str, Any]], Any]:
    def get(obj: Mapping[str, Any]) -> Any:
        value: Any = obj
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
        if isinstance(value, bool):
            return str(value).lower()
        return "" if value is None else str(value)
    return get


def _either(*getters: Callable[[Mapping[str, Any]], Any]) -> Callable[[Mapping[str, Any]], Any]:
    return lambda obj: next((v for v in (g(obj) for g in getters) if v), "")


_META: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "metadata.name": _at("metadata", "name"),
    "metadata.namespace": _at("metadata", "namespace"),
}
_INVOLVED = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
_FIELDS_BY_KIND: dict[str, dict[str, Callable[[Mapping[str, Any]], Any]]] = {
    # the API server's field label conversions (pkg/registry/*/strategy.go ToSelectableFields)
    "Pod": {
        "spec.nodeName": _at("spec", "nodeName"),  # kubectl drain, describe node
        "spec.restartPolicy": _at("spec", "restartPolicy"),
        "spec.schedulerName": _at("spec", "schedulerName"),
        "spec.serviceAccountName": _at("spec", "serviceAccountName"),
        "spec.hostNetwork": lambda o: str(bool((o.get("spec") or {}).get("hostNetwork"))).lower(),
        "status.phase": _at("status", "phase"),
        "status.podIP": _at("status", "podIP"),
        "status.nominatedNodeName": _at("status", "nominatedNodeName"),
    },
    "Node": {
        "spec.unschedulable": lambda o: str(bool((o.get("spec") or {}).get("unschedulable")))
        .lower(),
    },
    "Namespace": {"status.phase": _at("status", "phase")},
    "Secret": {"type": _at("type")},
    "ReplicaSet": {"status.replicas": _at("status", "replicas")},
    "Job": {"status.successful": _at("status", "succeeded")},
    # core/v1 and events.k8s.io/v1 (one storage; kubectl describe selects involvedObject.*)
    "Event": {
        **{f"involvedObject.{k}": _either(_at("involvedObject", k), _at("regarding", k))
           for k in _INVOLVED},
        "reason": _at("reason"),
        "reportingComponent": _either(_at("reportingComponent"), _at("reportingController")),
        "source": _either(_at("source", "component"), _at("deprecatedSource", "component")),
        "type": _at("type"),
    },
}


def _field_is(get: Callable[[Mapping[str, Any]], Any], value: str, equal: bool) -> Predicate:
    return lambda obj: (get(obj) == value) == equal


def field_selector(selector: str, kind: str | None = None) -> Predicate:
    """A ``fieldSelector`` with ``=``, ``==`` or ``!=``: ``metadata.name`` and
    ``metadata.namespace`` for every kind, and the fields the API server supports for ``kind``
    (Pods: ``spec.nodeName``, ``status.phase``, ...; Events: ``involvedObject.*``, ``reason``,
    ``source``, ``type``, ...); others are rejected as the server rejects them. Without
    ``kind``, any known field is accepted."""
    fields = dict(_META)
    if kind is None:
        for more in _FIELDS_BY_KIND.values():
            fields.update(more)
    else:
        fields.update(_FIELDS_BY_KIND.get(kind, {}))
    reqs: list[Predicate] = []
    for raw in _split_escaped(selector):
        m = _FIELD_RE.match(raw)
        if not m:
            raise SelectorError(f"invalid selector: '{raw}'; can't understand it")
        field, op, value = m.group(1), m.group(2), _unescape(m.group(3))
        if field not in fields:
            raise SelectorError(f"field label not supported: {field}")
        reqs.append(_field_is(fields[field], value, equal=op != "!="))
    return lambda obj: all(r(obj) for r in reqs)


_FIELD_RE = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s*(!=|==|=)(.*)$", re.DOTALL)


def _split_escaped(selector: str) -> list[str]:
    """apimachinery's fields.ParseSelector: terms split on commas not escaped with ``\\``."""
    parts, cur, escaped = [], "", False
    for ch in selector:
        if escaped:
            cur += "\\" + ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p for p in parts if p.strip()]


def _unescape(value: str) -> str:
    out, escaped = "", False
    for ch in value:
        if escaped:
            out += ch
            escaped = False
        elif ch == "\\":
            escaped = True
        else:
            out += ch
    return out
