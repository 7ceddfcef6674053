"""Certificate authorities and keys as Talos makes them (``talosctl gen secrets``).

Key types (DESIGN.md #7): OS CA Ed25519; etcd, Kubernetes and aggregator CAs ECDSA P-256;
service-account key RSA-4096 (PKCS#1). CAs carry KeyUsage CertSign|DigitalSignature,
ExtKeyUsage ServerAuth+ClientAuth, IsCA, 10-year validity. The talosconfig client certificate
is signed by the OS CA with O=os:admin, KeyUsage DigitalSignature and ExtKeyUsage ClientAuth only.

PEM labels follow Talos: "EC PRIVATE KEY" (SEC1), "RSA PRIVATE KEY" (PKCS#1) and
"ED25519 PRIVATE KEY" around PKCS#8 DER. ``load_private_key`` accepts all of them and plain
"PRIVATE KEY"; ``cryptography`` itself rejects the Ed25519 label, hence the relabelling.
"""

from __future__ import annotations

import datetime as dt
import math
import secrets as pysecrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import SecretsError

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey

CA_VALIDITY = dt.timedelta(hours=87600)
CLIENT_VALIDITY = dt.timedelta(days=365)


def _crypto() -> None:
    """Import ``cryptography`` into this module on first use. Rendering passes certificates and
    keys along as PEM bytes (``CertAndKey``) and needs none of it; the render of a large rack
    loads the bundle in a forked child, so the parent never pays for the import."""
    g = globals()
    if "x509" in g:
        return
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    g.update(x509=x509, hashes=hashes, serialization=serialization, ec=ec, ed25519=ed25519,
             rsa=rsa, ExtendedKeyUsageOID=ExtendedKeyUsageOID, NameOID=NameOID)

_ED25519_LABEL = b"ED25519 PRIVATE KEY"


@dataclass(frozen=True)
class CertAndKey:
    """PEM certificate and PEM private key (key may be absent for public-only copies)."""

    crt: bytes
    key: bytes | None

    def public(self) -> CertAndKey:
        return CertAndKey(self.crt, None)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def key_to_pem(key: PrivateKey) -> bytes:
    _crypto()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return pem.replace(b"PRIVATE KEY", _ED25519_LABEL)
    if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    raise TypeError(f"unsupported key type {type(key).__name__}")


def load_private_key(pem: bytes) -> PrivateKey:
    """Load a Talos-labelled PEM key (any of the labels Talos accepts).

    An RSA key is checked for consistency here rather than by OpenSSL's RSA_check_key, which
    also tests p and q for primality: ~0.25 s for the 4096-bit service-account key on every
    render. The arithmetic below catches what a damaged or mismatched key file shows (any
    changed bit breaks n = p*q or the exponents); primality is what a generator guarantees,
    and these keys are only ever made by ``new_rsa4096`` or ``talosctl gen secrets``."""
    _crypto()
    data = pem.replace(_ED25519_LABEL, b"PRIVATE KEY")
    try:
        key = serialization.load_pem_private_key(
            data, password=None, unsafe_skip_rsa_key_validation=True
        )
    except (ValueError, TypeError) as exc:
        raise SecretsError(f"cannot load private key: {exc}") from None
    if isinstance(key, rsa.RSAPrivateKey) and not _rsa_consistent(key.private_numbers()):
        raise SecretsError("cannot load private key: RSA key parameters are inconsistent")
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    ):
        raise SecretsError(f"unsupported private key type {type(key).__name__}")
    return key


def _rsa_consistent(n: rsa.RSAPrivateNumbers) -> bool:
    """n = p*q, e*d = 1 mod lcm(p-1, q-1), and the CRT values derived from them."""
    p, q, d, e = n.p, n.q, n.d, n.public_numbers.e
    if p < 3 or q < 3 or p == q or p * q != n.public_numbers.n:
        return False
    lam = (p - 1) * (q - 1) // math.gcd(p - 1, q - 1)
    return (
        (d * e) % lam == 1
        and n.dmp1 == d % (p - 1)
        and n.dmq1 == d % (q - 1)
        and (n.iqmp * q) % p == 1
    )


def load_certificate(pem: bytes) -> x509.Certificate:
    _crypto()
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise SecretsError(f"cannot load certificate: {exc}") from None


def _sign_hash(key: PrivateKey) -> hashes.HashAlgorithm | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    """DigitalSignature, plus CertSign for CAs (as siderolabs/crypto sets them)."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _serial() -> int:
    return pysecrets.randbits(127) | 1


def new_ca(
    key: PrivateKey,
    *,
    organization: str | None = None,
    common_name: str | None = None,
    now: dt.datetime | None = None,
) -> CertAndKey:
    """A self-signed CA as siderolabs/crypto makes it."""
    _crypto()
    now = now or _now()
    attrs = []
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    if common_name:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    name = x509.Name(attrs)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(now)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    cert = builder.sign(key, _sign_hash(key))  # type: ignore[arg-type]
    return CertAndKey(cert.public_bytes(serialization.Encoding.PEM), key_to_pem(key))


def issue_cert(
    ca: CertAndKey,
    key: PrivateKey,
    *,
    common_name: str | None = None,
    organizations: tuple[str, ...] = (),
    client: bool = True,
    server: bool = False,
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
    validity: dt.timedelta = CLIENT_VALIDITY,
    now: dt.datetime | None = None,
) -> CertAndKey:
    """A leaf certificate signed by ``ca`` (client and/or server auth)."""
    _crypto()
    import ipaddress

    if ca.key is None:
        raise SecretsError("the CA private key is needed to issue certificates")
    now = now or _now()
    ca_cert = load_certificate(ca.crt)
    ca_key = load_private_key(ca.key)
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    if common_name:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(now - dt.timedelta(seconds=10))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, _sign_hash(ca_key))  # type: ignore[arg-type]
    return CertAndKey(cert.public_bytes(serialization.Encoding.PEM), key_to_pem(key))


def new_ed25519() -> ed25519.Ed25519PrivateKey:
    _crypto()
    return ed25519.Ed25519PrivateKey.generate()


def new_p256() -> ec.EllipticCurvePrivateKey:
    _crypto()
    return ec.generate_private_key(ec.SECP256R1())


def new_rsa4096() -> rsa.RSAPrivateKey:
    _crypto()
    return rsa.generate_private_key(public_exponent=65537, key_size=4096)


def same_key_type(key: PrivateKey) -> PrivateKey:
    """A fresh key of the same type as ``key`` (leaf keys follow their CA's type)."""
    _crypto()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return new_ed25519()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return ec.generate_private_key(key.curve)
    return rsa.generate_private_key(public_exponent=65537, key_size=key.key_size)
