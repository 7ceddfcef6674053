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

from ..secrets.pki import CertAndKey, issue_cert, load_private_key, new_ca, new_p256

__all__ = ["EmulatorPki", "make_pki", "server_context"]


@dataclass(frozen=True)
class EmulatorPki:
    ca_pem: bytes
    server_cert_pem: bytes
    server_key_pem: bytes
    client_cert_pem: bytes
    client_key_pem: bytes


def make_pki(
    host: str = "127.0.0.1", *, days: int = 1, ca: tuple[bytes, bytes] | None = None
) -> EmulatorPki:
    """Server and admin client certificates, issued by ``ca`` (PEM certificate, PEM key: the
    cluster's Kubernetes CA, so kubeconfigs the Talos emulator hands out are accepted) or by a
    fresh throwaway ECDSA P-256 CA. Uses the same PKI code as the cluster secrets."""
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    validity = dt.timedelta(days=days)
    if ca is not None:
        load_private_key(ca[1])  # fail early, naming the problem, on an unusable CA key
        authority = CertAndKey(ca[0], ca[1])
    else:
        authority = new_ca(
            new_p256(), organization="cloudctl-emulator", common_name="kubernetes", now=now
        )
    ips: tuple[str, ...] = ()
    names: tuple[str, ...] = ("localhost", "kubernetes")
    try:
        ipaddress.ip_address(host)
        ips = (host,)
    except ValueError:
        names = (*names, host)
    server = issue_cert(
        authority,
        new_p256(),
        common_name="kube-apiserver",
        client=False,
        server=True,
        dns_names=names,
        ip_addresses=ips,
        validity=validity,
        now=now,
    )
    client = issue_cert(
        authority,
        new_p256(),
        common_name="admin",
        organizations=("system:masters",),
        client=True,
        server=False,
        validity=validity,
        now=now,
    )
    assert server.key is not None and client.key is not None
    return EmulatorPki(
        ca_pem=authority.crt,
        server_cert_pem=server.crt,
        server_key_pem=server.key,
        client_cert_pem=client.crt,
        client_key_pem=client.key,
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
