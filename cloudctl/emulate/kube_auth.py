"""Who is asking, and may they: the authentication and authorization reviews of the Kubernetes
API emulator (pure).

The user is the one the TLS server authenticated: a client certificate's CN is the user name
and its O values the groups (plus ``system:authenticated``), as the API server's x509
authenticator reads them; without a certificate the request is ``system:anonymous``
(``system:unauthenticated``).

- ``SelfSubjectReview`` (authentication.k8s.io/v1, ``kubectl auth whoami``): the user.
- ``SelfSubjectAccessReview`` (authorization.k8s.io/v1, ``kubectl auth can-i``): ``system:masters``
  may do everything (the API server's privileged group); anyone else as the RBAC objects in the
  store allow (ClusterRoleBindings and RoleBindings of the user, its groups or, for
  ``system:serviceaccount:<ns>:<name>``, that ServiceAccount; rules with ``*`` wildcards,
  ``resourceNames`` and ``nonResourceURLs`` with a trailing ``*``; aggregated ClusterRoles
  are not expanded).
- ``SelfSubjectRulesReview`` (``kubectl auth can-i --list``): the rules that apply in a namespace.
- impersonation (``kubectl --as=bob --as-group=dev``): the reviews answer for the impersonated
  user when the caller may impersonate (403 Forbidden otherwise).

The emulator does not enforce authorization on its other requests: these reviews answer what
a cluster with the same RBAC objects would.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .kube_store import ApiError, Store, bad_request

__all__ = ["MASTERS", "UserInfo", "access_review", "impersonate", "rules_review",
           "self_subject_review", "user_from_certificate"]

MASTERS = "system:masters"
ANONYMOUS = "system:anonymous"


@dataclass(frozen=True)
class UserInfo:
    username: str
    groups: tuple[str, ...] = field(default=())

    @classmethod
    def anonymous(cls) -> UserInfo:
        return cls(ANONYMOUS, ("system:unauthenticated",))


def user_from_certificate(peer: Mapping[str, Any] | None) -> UserInfo:
    """The user of ``ssl.SSLSocket.getpeercert()``'s subject (None: no certificate)."""
    if not peer or not peer.get("subject"):
        return UserInfo.anonymous()
    name, groups = "", []
    for rdn in peer["subject"]:
        for key, value in rdn:
            if key == "commonName":
                name = value
            elif key == "organizationName":
                groups.append(value)
    if not name:
        return UserInfo.anonymous()
    return UserInfo(name, (*groups, "system:authenticated"))


def _review_body(body: Any, kind: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request("the body of the request is not an object")
    if body.get("kind") not in (None, kind):
        raise bad_request(f"the body of the request is a {body.get('kind')}, not a {kind}")
    return body


def self_subject_review(user: UserInfo, now: str) -> dict[str, Any]:
    return {
        "kind": "SelfSubjectReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": now},
        "status": {"userInfo": {"username": user.username, "groups": list(user.groups)}},
    }


# --------------------------------------------------------------------------- RBAC


def _subject_matches(subject: Mapping[str, Any], user: UserInfo, binding_ns: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return bool(name == user.username)
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_ns
        return user.username == f"system:serviceaccount:{ns}:{name}"
    return False


def _objects(store: Store, api_version: str, kind: str) -> list[dict[str, Any]]:
    rt = store.type_of(api_version, kind)
    return [] if rt is None else [s.obj for s in store.iter_stored(rt)]


def _role_rules(store: Store, ref: Mapping[str, Any], namespace: str) -> list[dict[str, Any]]:
    kind = ref.get("kind")
    rbac = "rbac.authorization.k8s.io/v1"
    rt = store.type_of(rbac, str(kind))
    if rt is None:
        return []
    stored = store.lookup(rt, namespace if kind == "Role" else None, str(ref.get("name")))
    return [] if stored is None else list(stored.obj.get("rules") or [])


def applicable_rules(store: Store, user: UserInfo, namespace: str) -> Iterator[dict[str, Any]]:
    """Every RBAC rule granted to ``user`` cluster-wide, and in ``namespace`` if set."""
    rbac = "rbac.authorization.k8s.io/v1"
    for binding in _objects(store, rbac, "ClusterRoleBinding"):
        if any(_subject_matches(s, user, "") for s in binding.get("subjects") or []):
            yield from _role_rules(store, binding.get("roleRef") or {}, "")
    if not namespace:
        return
    for binding in _objects(store, rbac, "RoleBinding"):
        if binding["metadata"].get("namespace") != namespace:
            continue
        if any(_subject_matches(s, user, namespace) for s in binding.get("subjects") or []):
            yield from _role_rules(store, binding.get("roleRef") or {}, namespace)


def _has(values: Any, wanted: str) -> bool:
    values = values or []
    return "*" in values or wanted in values


def _allows(rule: Mapping[str, Any], attrs: Mapping[str, Any], non_resource: bool) -> bool:
    if not _has(rule.get("verbs"), str(attrs.get("verb", ""))):
        return False
    if non_resource:
        path = str(attrs.get("path", ""))
        return any(u == "*" or u == path or (u.endswith("*") and path.startswith(u[:-1]))
                   for u in rule.get("nonResourceURLs") or [])
    if not _has(rule.get("apiGroups"), str(attrs.get("group", ""))):
        return False
    resource = str(attrs.get("resource", ""))
    if attrs.get("subresource"):
        resource = f"{resource}/{attrs['subresource']}"
    resources = rule.get("resources") or []
    if not ("*" in resources or resource in resources
            or any(r.endswith("/*") and resource.startswith(r[:-1]) for r in resources)):
        return False
    names = rule.get("resourceNames") or []
    return not names or attrs.get("name") in names


def access_review(store: Store, user: UserInfo, body: Any) -> dict[str, Any]:
    """The answered SelfSubjectAccessReview (``status.allowed``, and a reason when allowed)."""
    review = _review_body(body, "SelfSubjectAccessReview")
    spec = review.get("spec") or {}
    resource, non_resource = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if bool(resource) == bool(non_resource):
        raise ApiError(
            422, "Invalid",
            'SelfSubjectAccessReview.authorization.k8s.io "" is invalid: spec.resourceAttributes: '
            "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes "
            "must be specified",
        )
    attrs: Mapping[str, Any] = resource or non_resource or {}
    status: dict[str, Any] = {"allowed": False}
    if MASTERS in user.groups:
        status = {"allowed": True}
    else:
        namespace = str(attrs.get("namespace") or "") if resource else ""
        for rule in applicable_rules(store, user, namespace):
            if _allows(rule, attrs, non_resource=bool(non_resource)):
                status = {"allowed": True, "reason": "RBAC: allowed by a role binding"}
                break
    return {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}


def rules_review(store: Store, user: UserInfo, body: Any) -> dict[str, Any]:
    """The answered SelfSubjectRulesReview of ``spec.namespace``."""
    review = _review_body(body, "SelfSubjectRulesReview")
    spec = review.get("spec") or {}
    resource_rules: list[dict[str, Any]] = []
    non_resource_rules: list[dict[str, Any]] = []
    if MASTERS in user.groups:
        resource_rules.append({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})
        non_resource_rules.append({"verbs": ["*"], "nonResourceURLs": ["*"]})
    for rule in applicable_rules(store, user, str(spec.get("namespace") or "")):
        if rule.get("nonResourceURLs"):
            non_resource_rules.append({"verbs": rule.get("verbs") or [],
                                       "nonResourceURLs": rule["nonResourceURLs"]})
        else:
            resource_rules.append({k: rule[k] for k in ("verbs", "apiGroups", "resources",
                                                        "resourceNames") if k in rule})
    return {"kind": "SelfSubjectRulesReview", "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None}, "spec": spec,
            "status": {"resourceRules": resource_rules, "nonResourceRules": non_resource_rules,
                       "incomplete": False}}


def impersonate(store: Store, user: UserInfo, headers: Mapping[str, str]) -> UserInfo:
    """The user a request acts as: ``Impersonate-User`` / ``Impersonate-Group`` (lower-case
    header names; repeated groups joined with commas) when ``user`` may impersonate — a member
    of ``system:masters``, or RBAC allows the ``impersonate`` verb on ``users`` — else 403."""
    name = headers.get("impersonate-user")
    if not name:
        return user
    groups = tuple(g.strip() for g in (headers.get("impersonate-group") or "").split(",")
                   if g.strip())
    if MASTERS not in user.groups and not any(
            _allows(rule, {"verb": "impersonate", "group": "", "resource": "users",
                           "name": name}, non_resource=False)
            for rule in applicable_rules(store, user, "")):
        raise ApiError(
            403, "Forbidden",
            f'users "{name}" is forbidden: User "{user.username}" cannot impersonate resource '
            '"users" in API group "" at the cluster scope',
            {"name": name, "kind": "users"})
    return UserInfo(name, (*groups, "system:authenticated"))
