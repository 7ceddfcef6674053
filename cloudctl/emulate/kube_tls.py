"""Certificates for the Kubernetes API emulator: a throwaway CA, a server certificate for the
loopback address and an admin client certificate (O=system:masters), as a cluster would have.

Made fresh for every emulator instance with ``cryptography`` (ECDSA P-256, like Talos's
Kubernetes CA); nothing is written to disk except the 0600 files ``ssl`` needs to load a key.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import tempfile
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["EmulatorPki", "make_pki", "server_context"]


@dataclass(frozen=True)
class EmulatorPki:
    ca_pem: bytes
    server_cert_pem: bytes
    server_key_pem: bytes
    client_cert_pem: bytes
    client_key_pem: bytes


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _load_ca(cert_pem: bytes, key_pem: bytes) -> tuple[x509.Certificate, Any]:
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise ValueError(f"unsupported CA key type {type(key).__name__}")
    return cert, key


def make_pki(
    host: str = "127.0.0.1", *, days: int = 1, ca: tuple[bytes, bytes] | None = None
) -> EmulatorPki:
    """Server and admin client certificates, issued by ``ca`` (PEM certificate, PEM key: the
    cluster's Kubernetes CA, so kubeconfigs the Talos emulator hands out are accepted) or by a
    fresh throwaway CA."""
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=days)
    if ca is not None:
        ca_cert, ca_key = _load_ca(*ca)
        return _issue(host, ca_cert, ca_key, now, until)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("kubernetes", "cloudctl-emulator")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    return _issue(host, ca_cert, ca_key, now, until)


def _issue(
    host: str, ca_cert: x509.Certificate, ca_key: Any, now: dt.datetime, until: dt.datetime
) -> EmulatorPki:
    ca_name = ca_cert.subject
    algorithm = None if isinstance(ca_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()

    def leaf(
        name: x509.Name, usage: x509.ObjectIdentifier, san: x509.SubjectAlternativeName | None
    ) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if san is not None:
            builder = builder.add_extension(san, critical=False)
        cert = builder.sign(ca_key, algorithm)
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    sans: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.DNSName("kubernetes")]
    try:
        sans.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        sans.append(x509.DNSName(host))
    server_cert, server_key = leaf(
        _name("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH, x509.SubjectAlternativeName(sans)
    )
    client_cert, client_key = leaf(
        _name("admin", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH, None
    )
    return EmulatorPki(
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
        server_cert_pem=server_cert,
        server_key_pem=server_key,
        client_cert_pem=client_cert,
        client_key_pem=client_key,
    )


def server_context(pki: EmulatorPki, *, require_client_cert: bool) -> ssl.SSLContext:
    """TLS server context; client certificates are verified against the emulator's CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="cloudctl-kube-emu-") as tmp:
        cert_path = os.path.join(tmp, "server.crt")
        key_path = os.path.join(tmp, "server.key")
        for path, data in ((cert_path, pki.server_cert_pem), (key_path, pki.server_key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        ctx.load_cert_chain(cert_path, key_path)
    ctx.load_verify_locations(cadata=pki.ca_pem.decode())
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx
