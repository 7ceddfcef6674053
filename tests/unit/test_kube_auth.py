"""Authentication and authorization reviews of the Kubernetes API emulator, without sockets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cloudctl.emulate.kube_api import KubeApi
from cloudctl.emulate.kube_auth import UserInfo, user_from_certificate
from cloudctl.emulate.kube_reconcile import Controllers
from cloudctl.emulate.kube_store import Store

RBAC = "rbac.authorization.k8s.io/v1"
SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
ADMIN = UserInfo("admin", ("system:masters", "system:authenticated"))
BOB = UserInfo("bob", ("dev", "system:authenticated"))


@pytest.fixture
def api() -> KubeApi:
    store = Store()
    return KubeApi(store, Controllers(store), clock=lambda: 0.0)


def _post(api: KubeApi, path: str, body: Any, user: UserInfo | None,
          headers: dict[str, str] | None = None) -> tuple[int, Any]:
    resp = api.handle("POST", path, {"Content-Type": "application/json", **(headers or {})},
                      json.dumps(body).encode(), user=user)
    return resp.code, json.loads(resp.body)


def _can(api: KubeApi, user: UserInfo, **attrs: str) -> bool:
    key = "nonResourceAttributes" if "path" in attrs else "resourceAttributes"
    code, out = _post(api, SSAR, {"apiVersion": "authorization.k8s.io/v1",
                                  "kind": "SelfSubjectAccessReview", "spec": {key: attrs}}, user)
    assert code == 201, out
    return bool(out["status"]["allowed"])


def _rbac(api: KubeApi) -> None:
    store = api.store
    for kind, ns, body in (
        ("ClusterRole", None, {"metadata": {"name": "reader"}, "rules": [
            {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]},
            {"nonResourceURLs": ["/healthz", "/metrics/*"], "verbs": ["get"]}]}),
        ("ClusterRoleBinding", None, {"metadata": {"name": "devs-read"}, "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "reader"},
            "subjects": [{"kind": "Group", "name": "dev"}]}),
        ("Role", "default", {"metadata": {"name": "deployer"}, "rules": [
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["*"],
             "resourceNames": ["web"]}]}),
        ("RoleBinding", "default", {"metadata": {"name": "bob-deploys"}, "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "deployer"},
            "subjects": [{"kind": "User", "name": "bob"}]}),
    ):
        rt = store.type_of(RBAC, kind)
        assert rt is not None
        store.create(rt, ns, body, manager="t")


def test_users_from_client_certificates() -> None:
    peer = {"subject": ((("organizationName", "system:masters"),),
                        (("commonName", "admin"),))}
    assert user_from_certificate(peer) == ADMIN
    assert user_from_certificate(None) == UserInfo("system:anonymous",
                                                   ("system:unauthenticated",))


def test_whoami(api: KubeApi) -> None:
    code, out = _post(api, "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                      {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
                      ADMIN)
    assert code == 201
    assert out["status"]["userInfo"] == {"username": "admin",
                                         "groups": ["system:masters", "system:authenticated"]}
    assert api.handle("GET", "/apis/authentication.k8s.io/v1/selfsubjectreviews", {}, b"",
                      user=ADMIN).code == 405


def test_masters_may_do_anything_others_what_rbac_grants(api: KubeApi) -> None:
    _rbac(api)
    assert _can(api, ADMIN, verb="delete", resource="nodes")
    assert _can(api, BOB, verb="list", resource="pods", namespace="kube-system")
    assert _can(api, BOB, verb="get", resource="pods", subresource="log", namespace="x")
    assert not _can(api, BOB, verb="delete", resource="pods", namespace="default")
    assert _can(api, BOB, verb="patch", group="apps", resource="deployments",
                namespace="default", name="web")
    assert not _can(api, BOB, verb="patch", group="apps", resource="deployments",
                    namespace="default", name="db")
    assert not _can(api, BOB, verb="patch", group="apps", resource="deployments",
                    namespace="other", name="web")
    assert _can(api, BOB, verb="get", path="/metrics/cadvisor")
    assert not _can(api, BOB, verb="get", path="/version")
    code, out = _post(api, SSAR, {"kind": "SelfSubjectAccessReview", "spec": {}}, BOB)
    assert (code, out["reason"]) == (422, "Invalid")


def test_rules_review_and_impersonation(api: KubeApi) -> None:
    _rbac(api)
    code, out = _post(api, "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
                      {"kind": "SelfSubjectRulesReview", "spec": {"namespace": "default"}}, BOB)
    assert code == 201
    resources = [r["resources"] for r in out["status"]["resourceRules"]]
    assert ["pods", "pods/log"] in resources and ["deployments"] in resources
    assert out["status"]["nonResourceRules"] == [
        {"verbs": ["get"], "nonResourceURLs": ["/healthz", "/metrics/*"]}]
    review = {"kind": "SelfSubjectAccessReview",
              "spec": {"resourceAttributes": {"verb": "list", "resource": "pods"}}}
    code, out = _post(api, SSAR, review, ADMIN, {"Impersonate-User": "carol"})
    assert code == 201 and out["status"]["allowed"] is False
    code, out = _post(api, SSAR, review, ADMIN,
                      {"Impersonate-User": "carol", "Impersonate-Group": "dev"})
    assert code == 201 and out["status"]["allowed"] is True
    code, out = _post(api, SSAR, review, BOB, {"Impersonate-User": "admin"})
    assert code == 403 and out["message"] == (
        'users "admin" is forbidden: User "bob" cannot impersonate resource "users" in API '
        'group "" at the cluster scope')
