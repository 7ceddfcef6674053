"""The cluster secrets bundle in Talos' own ``secrets.yaml`` format, plus the talosconfig.

``generate_bundle()`` makes everything once per cluster; ``bundle_to_yaml``/``bundle_from_yaml``
read and write the exact format ``talosctl gen secrets`` writes (so a bundle can be used with
talosctl ``--with-secrets`` and vice versa). The talosconfig admin credentials (client cert
signed by the OS CA) are kept beside it in the store, so every render is byte-identical.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import secrets as pysecrets
import string
from dataclasses import dataclass
from typing import Any

import yaml

from ..errors import SecretsError
from ..util.yamlcache import safe_load as yaml_safe_load
from .pki import (
    CertAndKey,
    issue_cert,
    load_certificate,
    load_private_key,
    new_ca,
    new_ed25519,
    new_p256,
    new_rsa4096,
    same_key_type,
)

_TOKEN_ALPHABET = string.ascii_lowercase + string.digits
_TOKEN_RE = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}$")


def _token() -> str:
    a = "".join(pysecrets.choice(_TOKEN_ALPHABET) for _ in range(6))
    b = "".join(pysecrets.choice(_TOKEN_ALPHABET) for _ in range(16))
    return f"{a}.{b}"


@dataclass(frozen=True)
class SecretsBundle:
    cluster_id: str
    cluster_secret: str
    bootstrap_token: str
    secretbox_encryption_secret: str
    trustd_token: str
    etcd: CertAndKey
    k8s: CertAndKey
    k8s_aggregator: CertAndKey
    k8s_service_account_key: bytes
    os: CertAndKey
    admin: CertAndKey
    """talosconfig client certificate (O=os:admin) signed by the OS CA."""

    def secret_strings(self) -> list[str]:
        """Every secret value as it could appear in text (for leak checks and redaction)."""
        out = [
            self.cluster_secret,
            self.bootstrap_token,
            self.secretbox_encryption_secret,
            self.trustd_token,
        ]
        for key in (
            self.etcd.key,
            self.k8s.key,
            self.k8s_aggregator.key,
            self.k8s_service_account_key,
            self.os.key,
            self.admin.key,
        ):
            if key:
                out.append(_b64(key))
                out.extend(
                    line.decode()
                    for line in key.splitlines()
                    if line and not line.startswith(b"-----")
                )
        return out


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise SecretsError(f"secrets bundle: {where} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise SecretsError(f"secrets bundle: {where} is not valid base64") from None


def generate_bundle(now: dt.datetime | None = None) -> SecretsBundle:
    now = now or dt.datetime.now(dt.UTC).replace(microsecond=0)
    os_ca = new_ca(new_ed25519(), organization="talos", now=now)
    assert os_ca.key is not None
    admin = issue_cert(
        os_ca,
        same_key_type(load_private_key(os_ca.key)),
        organizations=("os:admin",),
        client=True,
        server=False,
        now=now,
    )
    from cryptography.hazmat.primitives import serialization

    sa_key = new_rsa4096().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return SecretsBundle(
        cluster_id=base64.urlsafe_b64encode(pysecrets.token_bytes(32)).decode(),
        cluster_secret=base64.b64encode(pysecrets.token_bytes(32)).decode(),
        bootstrap_token=_token(),
        secretbox_encryption_secret=base64.b64encode(pysecrets.token_bytes(32)).decode(),
        trustd_token=_token(),
        etcd=new_ca(new_p256(), organization="etcd", now=now),
        k8s=new_ca(new_p256(), organization="kubernetes", now=now),
        k8s_aggregator=new_ca(new_p256(), common_name="front-proxy", now=now),
        k8s_service_account_key=sa_key,
        os=os_ca,
        admin=admin,
    )


def bundle_to_yaml(b: SecretsBundle) -> str:
    """Talos' secrets.yaml (no admin credentials; see ``admin_to_yaml``)."""

    def ck(c: CertAndKey) -> dict[str, str]:
        assert c.key is not None
        return {"crt": _b64(c.crt), "key": _b64(c.key)}

    doc = {
        "cluster": {"id": b.cluster_id, "secret": b.cluster_secret},
        "secrets": {
            "bootstraptoken": b.bootstrap_token,
            "secretboxencryptionsecret": b.secretbox_encryption_secret,
        },
        "trustdinfo": {"token": b.trustd_token},
        "certs": {
            "etcd": ck(b.etcd),
            "k8s": ck(b.k8s),
            "k8saggregator": ck(b.k8s_aggregator),
            "k8sserviceaccount": {"key": _b64(b.k8s_service_account_key)},
            "os": ck(b.os),
        },
    }
    return yaml.safe_dump(doc, sort_keys=False, width=100000)


def admin_to_yaml(b: SecretsBundle) -> str:
    assert b.admin.key is not None
    return yaml.safe_dump(
        {"adminCert": {"crt": _b64(b.admin.crt), "key": _b64(b.admin.key)}},
        sort_keys=False,
        width=100000,
    )


def _get(d: Any, path: str) -> Any:
    cur = d
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise SecretsError(f"secrets bundle: missing {path}")
        cur = cur[part]
    return cur


def _certkey(doc: Any, path: str, *, key_only: bool = False) -> CertAndKey:
    key = _unb64(_get(doc, f"{path}.key"), f"{path}.key")
    load_private_key(key)
    if key_only:
        return CertAndKey(b"", key)
    crt = _unb64(_get(doc, f"{path}.crt"), f"{path}.crt")
    load_certificate(crt)
    return CertAndKey(crt, key)


def bundle_from_yaml(secrets_text: str, admin_text: str | None) -> SecretsBundle:
    try:
        doc = yaml_safe_load(secrets_text)
        admin_doc = yaml_safe_load(admin_text) if admin_text is not None else None
    except yaml.YAMLError as exc:
        raise SecretsError(f"secrets bundle is not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise SecretsError("secrets bundle: expected a mapping")
    for path in ("secrets.bootstraptoken", "trustdinfo.token"):
        if not _TOKEN_RE.match(str(_get(doc, path))):
            raise SecretsError(
                f"secrets bundle: {path} is not a token like abcdef.0123456789abcdef"
            )
    secrets_sec = _get(doc, "secrets")
    if "secretboxencryptionsecret" not in secrets_sec:
        raise SecretsError(
            "secrets bundle: secrets.secretboxencryptionsecret missing "
            "(aescbcencryptionsecret bundles from Talos <= 1.2 are not supported)"
        )
    os_ca = _certkey(doc, "certs.os")
    if admin_doc is not None:
        admin = _certkey(admin_doc, "adminCert")
    else:
        assert os_ca.key is not None
        admin = issue_cert(
            os_ca, same_key_type(load_private_key(os_ca.key)), organizations=("os:admin",)
        )
    return SecretsBundle(
        cluster_id=str(_get(doc, "cluster.id")),
        cluster_secret=str(_get(doc, "cluster.secret")),
        bootstrap_token=str(_get(doc, "secrets.bootstraptoken")),
        secretbox_encryption_secret=str(_get(doc, "secrets.secretboxencryptionsecret")),
        trustd_token=str(_get(doc, "trustdinfo.token")),
        etcd=_certkey(doc, "certs.etcd"),
        k8s=_certkey(doc, "certs.k8s"),
        k8s_aggregator=_certkey(doc, "certs.k8saggregator"),
        k8s_service_account_key=_certkey(doc, "certs.k8sserviceaccount", key_only=True).key or b"",
        os=os_ca,
        admin=admin,
    )


def talosconfig(
    b: SecretsBundle, context: str, endpoints: list[str], nodes: list[str] | None = None
) -> str:
    """A talosconfig as talosctl writes it (ca/crt/key base64 of PEM)."""
    assert b.admin.key is not None
    ctx: dict[str, Any] = {"endpoints": list(endpoints)}
    if nodes:
        ctx["nodes"] = list(nodes)
    ctx.update({"ca": _b64(b.os.crt), "crt": _b64(b.admin.crt), "key": _b64(b.admin.key)})
    return yaml.safe_dump(
        {"context": context, "contexts": {context: ctx}}, sort_keys=False, width=100000
    )
