"""Client <-> emulated node over real TLS with Ed25519 certificates, in both modes.

Maintenance: TLS without client certificate, node certificate not verified (optionally pinned).
Normal: mutual TLS against the applied config's OS CA; refusals for a missing client cert, a
client cert from another CA, a server the client's CA did not sign, a reader role calling an
admin API, and a client cert whose ExtKeyUsage is not exactly ClientAuth.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from grpclib.const import Status

from cloudctl.emulate import Rack
from cloudctl.emulate.talos_scenario import ClusterMaterial, cluster_material
from cloudctl.inventory import load_inventory
from cloudctl.secrets import generate_bundle
from cloudctl.secrets.pki import issue_cert, new_ed25519
from cloudctl.talos.client import Credentials, TalosApiError, TalosClient
from cloudctl.talos.ops import wait_running

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory.example.yaml"
T = TypeVar("T")


@pytest.fixture(scope="module")
def material() -> ClusterMaterial:
    return cluster_material(load_inventory(EXAMPLE).inventory)


def with_rack(material: ClusterMaterial, body: Callable[[Rack], Awaitable[T]]) -> T:
    async def run() -> T:
        async with Rack(material.inventory) as rack:
            return await body(rack)

    return asyncio.run(run())


async def install(rack: Rack, material: ClusterMaterial, name: str) -> str:
    node = material.inventory.node(name)
    async with TalosClient(rack.endpoint(str(node.ip))) as c:
        await c.apply_configuration(material.configs[name])
    await wait_running(rack.endpoint(str(node.ip)), material.credentials, timeout=10)
    return str(node.ip)


def test_maintenance_mode_is_tls_with_ed25519_and_no_client_cert(
    material: ClusterMaterial,
) -> None:
    async def body(rack: Rack) -> None:
        ep = rack.endpoint("10.20.0.11")
        async with TalosClient(ep) as c:
            assert await c.machine_stage() == "maintenance"
            assert (await c.version()).tag == "v1.13.6"
            assert len(await c.disks()) == 3
            spki = c.peer_spki()
        assert spki is not None
        der = rack.nodes["cp1"]._maintenance_ca  # the node's own self-signed root
        assert isinstance(
            x509.load_pem_x509_certificate(der.crt).public_key(), ed25519.Ed25519PublicKey
        )
        # pinned to the key seen before: accepted; pinned to another key: refused
        async with TalosClient(ep, spki_pins=(spki,)) as c:
            assert await c.machine_stage() == "maintenance"
        async with TalosClient(ep, spki_pins=("00" * 32,)) as c:
            with pytest.raises(TalosApiError, match="matches no pinned fingerprint"):
                await c.machine_stage()
        # an mTLS client does not accept the maintenance certificate (not from the OS CA)
        async with TalosClient(ep, material.credentials) as c:
            with pytest.raises(TalosApiError, match="TLS handshake refused"):
                await c.version()

    with_rack(material, body)


def test_normal_mode_requires_client_cert_from_the_os_ca(material: ClusterMaterial) -> None:
    other = generate_bundle()
    wrong_client = Credentials(material.credentials.ca, other.admin.crt, other.admin.key or b"")
    wrong_server = Credentials(other.os.crt, material.credentials.crt, material.credentials.key)

    async def body(rack: Rack) -> None:
        ip = await install(rack, material, "cp1")
        ep = rack.endpoint(ip)
        async with TalosClient(ep, material.credentials) as c:
            assert (await c.version()).tag == "v1.13.6"
            assert await c.machine_stage() == "running"
            peer = c._channel._protocol.connection._transport.get_extra_info("ssl_object")  # type: ignore[union-attr]
            cert = x509.load_der_x509_certificate(peer.getpeercert(binary_form=True))
            assert isinstance(cert.public_key(), ed25519.Ed25519PublicKey)
            assert cert.issuer == x509.load_pem_x509_certificate(material.bundle.os.crt).subject
        async with TalosClient(ep) as c:  # no client certificate
            with pytest.raises(TalosApiError) as missing:
                await c.version()
        assert missing.value.code == Status.UNAVAILABLE and missing.value.node == ip
        async with TalosClient(ep, wrong_client) as c:
            with pytest.raises(TalosApiError):
                await c.version()
        async with TalosClient(ep, wrong_server) as c:
            with pytest.raises(TalosApiError, match="certificate verify failed"):
                await c.version()

    with_rack(material, body)


def test_roles_and_client_auth_usage(material: ClusterMaterial) -> None:
    os_ca = material.bundle.os
    reader = issue_cert(os_ca, new_ed25519(), organizations=("os:reader",))
    both = issue_cert(os_ca, new_ed25519(), organizations=("os:admin",), client=True, server=True)

    async def body(rack: Rack) -> None:
        ip = await install(rack, material, "cp1")
        ep = rack.endpoint(ip)
        creds = Credentials(os_ca.crt, reader.crt, reader.key or b"")
        async with TalosClient(ep, creds) as c:
            assert (await c.version()).tag == "v1.13.6"
            with pytest.raises(TalosApiError) as denied:
                await c.bootstrap()
            assert denied.value.code == Status.PERMISSION_DENIED
        async with TalosClient(ep, Credentials(os_ca.crt, both.crt, both.key or b"")) as c:
            with pytest.raises(TalosApiError, match="client auth extended key usage"):
                await c.version()

    with_rack(material, body)


def test_talosconfig_credentials_relabel_ed25519_key(material: ClusterMaterial) -> None:
    from cloudctl.secrets import talosconfig

    text = talosconfig(material.bundle, "rack1", ["10.20.0.10"])
    creds = Credentials.from_talosconfig(text)
    assert b"ED25519 PRIVATE KEY" in creds.key  # as Talos writes it
    assert creds.ca == material.bundle.os.crt
    assert base64.b64decode(base64.b64encode(creds.crt)) == material.bundle.admin.crt
