"""Secrets bundle: key types and certificate profiles as Talos makes them, store, talosconfig."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cloudctl.errors import SecretsError
from cloudctl.secrets import (
    SecretsStore,
    bundle_from_yaml,
    bundle_to_yaml,
    generate_bundle,
    load_private_key,
    talosconfig,
)
from cloudctl.secrets.bundle import SecretsBundle


@pytest.fixture(scope="module")
def bundle() -> SecretsBundle:
    return generate_bundle()


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def test_key_types_and_pem_labels(bundle: SecretsBundle) -> None:
    assert bundle.os.key is not None and bundle.os.key.startswith(
        b"-----BEGIN ED25519 PRIVATE KEY-----"
    )
    assert isinstance(load_private_key(bundle.os.key), ed25519.Ed25519PrivateKey)
    for ca in (bundle.etcd, bundle.k8s, bundle.k8s_aggregator):
        assert ca.key is not None and ca.key.startswith(b"-----BEGIN EC PRIVATE KEY-----")
        key = load_private_key(ca.key)
        assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert bundle.k8s_service_account_key.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    sa = load_private_key(bundle.k8s_service_account_key)
    assert isinstance(sa, rsa.RSAPrivateKey) and sa.key_size == 4096


def test_ca_profiles(bundle: SecretsBundle) -> None:
    subjects = {
        "etcd": (bundle.etcd, NameOID.ORGANIZATION_NAME, "etcd"),
        "k8s": (bundle.k8s, NameOID.ORGANIZATION_NAME, "kubernetes"),
        "aggregator": (bundle.k8s_aggregator, NameOID.COMMON_NAME, "front-proxy"),
        "os": (bundle.os, NameOID.ORGANIZATION_NAME, "talos"),
    }
    for name, (ca, oid, value) in subjects.items():
        cert = _cert(ca.crt)
        assert cert.subject.get_attributes_for_oid(oid)[0].value == value, name
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        assert bc.ca, name
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert ku.key_cert_sign and ku.digital_signature, name
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        life = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert life.days == 3650, name


def test_admin_client_cert(bundle: SecretsBundle) -> None:
    cert = _cert(bundle.admin.crt)
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "os:admin"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # signed by the OS CA (Ed25519)
    os_ca = _cert(bundle.os.crt)
    assert cert.issuer == os_ca.subject
    os_ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes)  # type: ignore[call-arg]
    assert isinstance(load_private_key(bundle.admin.key or b""), ed25519.Ed25519PrivateKey)


def test_tokens_and_secrets_format(bundle: SecretsBundle) -> None:
    import re

    assert re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", bundle.bootstrap_token)
    assert re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", bundle.trustd_token)
    assert len(base64.urlsafe_b64decode(bundle.cluster_id)) == 32
    assert len(base64.b64decode(bundle.cluster_secret)) == 32
    assert len(base64.b64decode(bundle.secretbox_encryption_secret)) == 32


def test_talos_secrets_yaml_format(bundle: SecretsBundle) -> None:
    doc = yaml.safe_load(bundle_to_yaml(bundle))
    assert set(doc) == {"cluster", "secrets", "trustdinfo", "certs"}
    assert set(doc["certs"]) == {"etcd", "k8s", "k8saggregator", "k8sserviceaccount", "os"}
    assert set(doc["certs"]["k8sserviceaccount"]) == {"key"}
    assert base64.b64decode(doc["certs"]["os"]["key"]).startswith(b"-----BEGIN ED25519 PRIVATE KEY")


def test_roundtrip(bundle: SecretsBundle) -> None:
    from cloudctl.secrets.bundle import admin_to_yaml

    again = bundle_from_yaml(bundle_to_yaml(bundle), admin_to_yaml(bundle))
    assert again == bundle


def test_corrupt_bundle_is_named() -> None:
    with pytest.raises(SecretsError, match=r"certs\.os\.key"):
        bundle_from_yaml(
            "cluster: {id: a, secret: b}\nsecrets: {bootstraptoken: abcdef.0123456789abcdef, "
            "secretboxencryptionsecret: x}\ntrustdinfo: {token: abcdef.0123456789abcdef}\n"
            "certs: {os: {crt: '!!', key: '@@'}}\n",
            None,
        )


def test_store_modes_and_reuse(tmp_path: Path) -> None:
    store = SecretsStore(tmp_path / "s" / "rack1")
    b1, created = store.init()
    assert created
    for p in (store.secrets_path, store.admin_path):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.directory).st_mode) == 0o700
    b2, created2 = store.init()
    assert not created2 and b2 == b1


def test_store_missing(tmp_path: Path) -> None:
    with pytest.raises(SecretsError, match="secrets init") as err:
        SecretsStore(tmp_path).load()
    assert err.value.exit_code == 3


def test_talosconfig(bundle: SecretsBundle) -> None:
    doc = yaml.safe_load(talosconfig(bundle, "rack1", ["10.0.0.11"], ["10.0.0.11", "10.0.0.21"]))
    assert doc["context"] == "rack1"
    ctx = doc["contexts"]["rack1"]
    assert ctx["endpoints"] == ["10.0.0.11"] and ctx["nodes"] == ["10.0.0.11", "10.0.0.21"]
    assert base64.b64decode(ctx["ca"]) == bundle.os.crt
    assert base64.b64decode(ctx["crt"]) == bundle.admin.crt
    assert base64.b64decode(ctx["key"]) == bundle.admin.key


def test_secret_strings_cover_keys(bundle: SecretsBundle) -> None:
    s = bundle.secret_strings()
    assert bundle.bootstrap_token in s and bundle.cluster_secret in s
    assert base64.b64encode(bundle.os.key or b"").decode() in s


def test_inconsistent_rsa_key_is_refused(bundle: SecretsBundle) -> None:
    """RSA keys are checked by arithmetic, not by OpenSSL's primality tests: a key whose
    private exponent belongs to another key (a spliced or damaged file) is still refused,
    and the bundle's own service-account key still loads."""
    from cryptography.hazmat.primitives import serialization

    from cloudctl.secrets.pki import load_private_key

    good = load_private_key(bundle.k8s_service_account_key)
    assert isinstance(good, rsa.RSAPrivateKey)
    other = rsa.generate_private_key(65537, 2048).private_numbers()
    mine = good.private_numbers()
    spliced = rsa.RSAPrivateNumbers(
        p=mine.p, q=mine.q, d=other.d, dmp1=mine.dmp1, dmq1=mine.dmq1, iqmp=mine.iqmp,
        public_numbers=mine.public_numbers,
    ).private_key(unsafe_skip_rsa_key_validation=True)
    pem = spliced.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    with pytest.raises(SecretsError, match="inconsistent"):
        load_private_key(pem)
