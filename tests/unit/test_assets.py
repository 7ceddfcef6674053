"""Image Factory fetch + cache against a local stand-in factory (real HTTP on loopback), and the
iPXE binary lookup."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from cloudctl.boot.assets import (
    MANIFEST,
    arm64_note,
    disk_image_files,
    fetch_assets,
    find_ipxe_binaries,
    stage_tftp_root,
)
from cloudctl.errors import EnvironmentNotReady, RemoteError
from cloudctl.inventory.models import Inventory
from cloudctl.render.schematic import schematic_for

INV = """
cluster: {name: rack1, talosVersion: v1.13.5, kubernetesVersion: v1.35.0}
network: {interface: eno1, bootServer: 10.20.0.2, subnet: 10.20.0.0/24, gateway: 10.20.0.1}
image: {extensions: [siderolabs/drbd, siderolabs/zfs], extraKernelArgs: [net.ifnames=0]}
nodes:
  - {name: cp1, role: controlplane, macs: ["52:54:00:10:00:11"], ip: 10.20.0.11}
"""


class Factory(BaseHTTPRequestHandler):
    """Stand-in for the Image Factory API: POST /schematics (id = sha256 of the posted canonical
    YAML, as the factory computes it), GET /image/... answered with a 302 to a CDN path that
    supports Range, '.sha256' answered 402 unless a checksum is published."""

    files: ClassVar[dict[str, bytes]] = {}
    log: ClassVar[list[tuple[str, str, str | None]]] = []
    wrong_id: ClassVar[bool] = False
    redirect_post: ClassVar[bool] = False
    published: ClassVar[dict[str, str]] = {}
    cut_after: ClassVar[dict[str, int]] = {}
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.log.append(("POST", self.path, self.headers.get("Content-Type")))
        if self.redirect_post:
            self._send(302, b"", {"Location": "/elsewhere"})
            return
        sid = hashlib.sha256(body).hexdigest()
        if self.wrong_id:
            sid = "0" * 64
        doc = {"id": sid, "schematic": body.decode()}
        self._send(201, json.dumps(doc).encode(), {"Content-Type": "application/json"})

    def do_GET(self) -> None:
        self.log.append(("GET", self.path, self.headers.get("Range")))
        if self.path.startswith("/image/"):
            rest = self.path[len("/image/") :]
            if rest.endswith(".sha256"):
                name = rest.rsplit("/", 1)[-1][: -len(".sha256")]
                if name in self.published:
                    self._send(200, f"{self.published[name]}  {name}\n".encode())
                else:
                    self._send(402, b"checksums are an Enterprise feature")
                return
            self._send(302, b"", {"Location": f"/cdn/{rest}"})
            return
        if self.path.startswith("/cdn/"):
            name = self.path.rsplit("/", 1)[-1]
            data = self.files.get(name)
            if data is None:
                self._send(404, b"no")
                return
            rng = self.headers.get("Range")
            start = 0
            if rng:
                start = int(rng.split("=")[1].rstrip("-"))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            cut = self.cut_after.pop(name, None)
            if cut is not None:
                self.wfile.write(data[start:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(data[start:])
            return
        self._send(404, b"no")


@pytest.fixture()
def factory() -> Iterator[tuple[str, type[Factory]]]:
    handler = type("F", (Factory,), {})
    handler.files = {
        "kernel-amd64": os.urandom(300_000),
        "initramfs-amd64.xz": os.urandom(700_000),
    }
    handler.log = []
    handler.published = {}
    handler.cut_after = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def inventory() -> Inventory:
    return Inventory.model_validate(yaml.safe_load(INV))


def test_fetch_downloads_verifies_and_caches(
    tmp_path: Path, factory: tuple[str, type[Factory]]
) -> None:
    url, f = factory
    inv = inventory()
    sid = schematic_for(inv).id
    got = fetch_assets(inv, cache=tmp_path, factory_url=url)
    assert got.schematic_id == sid and got.version == "v1.13.5"
    assert got.directory == tmp_path / sid / "v1.13.5"
    assert got.paths["kernel"].read_bytes() == f.files["kernel-amd64"]
    assert got.paths["initramfs.xz"].read_bytes() == f.files["initramfs-amd64.xz"]
    assert {a.checksum for a in got.assets.values()} == {"recorded"}  # factory offers none
    manifest = json.loads((got.directory / MANIFEST).read_text())
    assert manifest["kernel-amd64"]["sha256"] == hashlib.sha256(f.files["kernel-amd64"]).hexdigest()
    assert not list(got.directory.glob("*.part"))
    # the POST carried our canonical schematic as YAML; downloads followed the 302 to the CDN
    assert f.log[0] == ("POST", "/schematics", "application/yaml")
    assert ("GET", f"/cdn/{sid}/v1.13.5/kernel-amd64", None) in f.log

    # second fetch: verified from the cache, nothing downloaded and the factory not even
    # asked (a rack without Internet boots from a cache filled beforehand)
    f.log.clear()
    again = fetch_assets(inv, cache=tmp_path, factory_url="http://127.0.0.1:9")
    assert {a.checksum for a in again.assets.values()} == {"verified-cache"}
    assert not any(a.downloaded for a in again.assets.values())
    assert f.log == []


def test_corrupted_cache_is_fetched_again(
    tmp_path: Path, factory: tuple[str, type[Factory]]
) -> None:
    url, f = factory
    inv = inventory()
    got = fetch_assets(inv, cache=tmp_path, factory_url=url)
    kernel = got.paths["kernel"]
    kernel.write_bytes(b"tampered")
    again = fetch_assets(inv, cache=tmp_path, factory_url=url)
    assert again.assets["kernel"].downloaded and again.assets["kernel"].checksum == "recorded"
    assert kernel.read_bytes() == f.files["kernel-amd64"]
    assert not again.assets["initramfs.xz"].downloaded


def test_interrupted_download_resumes_with_range(
    tmp_path: Path, factory: tuple[str, type[Factory]]
) -> None:
    url, f = factory
    inv = inventory()
    f.cut_after["initramfs-amd64.xz"] = 250_000
    with pytest.raises(RemoteError, match="resume"):
        fetch_assets(inv, cache=tmp_path, factory_url=url)
    sid = schematic_for(inv).id
    part = tmp_path / sid / "v1.13.5" / "initramfs-amd64.xz.part"
    assert part.stat().st_size == 250_000
    got = fetch_assets(inv, cache=tmp_path, factory_url=url)
    assert got.paths["initramfs.xz"].read_bytes() == f.files["initramfs-amd64.xz"]
    assert ("GET", f"/cdn/{sid}/v1.13.5/initramfs-amd64.xz", "bytes=250000-") in f.log
    assert not part.exists()


def test_published_checksum_is_verified(tmp_path: Path, factory: tuple[str, type[Factory]]) -> None:
    url, f = factory
    f.published["kernel-amd64"] = hashlib.sha256(f.files["kernel-amd64"]).hexdigest()
    f.published["initramfs-amd64.xz"] = "ab" * 32  # wrong on purpose
    with pytest.raises(RemoteError, match="does not match the factory's published"):
        fetch_assets(inventory(), cache=tmp_path, factory_url=url)
    sid = schematic_for(inventory()).id
    d = tmp_path / sid / "v1.13.5"
    assert (d / "kernel-amd64").exists()  # verified against the published sum
    assert json.loads((d / MANIFEST).read_text())["kernel-amd64"]["checksum"] == "factory"
    assert not (d / "initramfs-amd64.xz").exists()  # never left where it would be served
    assert (d / "initramfs-amd64.xz.bad").exists()


def test_schematic_id_mismatch_names_both(
    tmp_path: Path, factory: tuple[str, type[Factory]]
) -> None:
    url, f = factory
    f.wrong_id = True
    sid = schematic_for(inventory()).id
    with pytest.raises(RemoteError) as exc:
        fetch_assets(inventory(), cache=tmp_path, factory_url=url)
    assert sid in str(exc.value) and "0" * 64 in str(exc.value)


def test_schematic_post_does_not_follow_redirects(
    tmp_path: Path, factory: tuple[str, type[Factory]]
) -> None:
    url, f = factory
    f.redirect_post = True
    with pytest.raises(RemoteError, match="HTTP 302"):
        fetch_assets(inventory(), cache=tmp_path, factory_url=url)
    assert [e[0] for e in f.log] == ["POST"]


def test_unreachable_factory_is_a_remote_error(tmp_path: Path) -> None:
    with pytest.raises(RemoteError, match="unreachable"):
        fetch_assets(inventory(), cache=tmp_path, factory_url="http://127.0.0.1:9", timeout=2)


# --------------------------------------------------------------------------- iPXE binaries


def test_find_ipxe_binaries_in_directory_and_stage(tmp_path: Path) -> None:
    src = tmp_path / "ipxe"
    (src / "arm64-efi").mkdir(parents=True)
    for name in ("undionly.kpxe", "snponly.efi", "ipxe.efi"):
        (src / name).write_bytes(name.encode())
    found = find_ipxe_binaries(src)
    assert set(found) == {"undionly.kpxe", "snponly.efi", "ipxe.efi"}
    assert arm64_note(found) is not None and "arch 11" in (arm64_note(found) or "")
    (src / "arm64-efi" / "snponly.efi").write_bytes(b"arm")
    found = find_ipxe_binaries(src)
    assert found["ipxe-arm64.efi"] == src / "arm64-efi" / "snponly.efi"
    assert arm64_note(found) is None
    staged = stage_tftp_root(found, tmp_path / "tftp")
    assert (tmp_path / "tftp" / "ipxe-arm64.efi").read_bytes() == b"arm"
    assert all(not p.is_symlink() for p in staged.values())


def test_find_ipxe_binaries_names_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "ipxe.efi").write_bytes(b"x")
    with pytest.raises(EnvironmentNotReady) as exc:
        find_ipxe_binaries(tmp_path)
    assert "undionly.kpxe" in str(exc.value) and "snponly.efi" in str(exc.value)
    assert "ipxe.efi," not in str(exc.value)


@pytest.mark.skipif(not Path("/usr/lib/ipxe/undionly.kpxe").exists(), reason="no Debian ipxe")
def test_find_debian_ipxe() -> None:
    found = find_ipxe_binaries()
    assert found["undionly.kpxe"] == Path("/usr/lib/ipxe/undionly.kpxe")
    assert found["snponly.efi"].read_bytes()[:2] == b"MZ"  # a PE/COFF EFI binary


def test_concurrent_fetch_into_same_cache_is_refused(
    tmp_path: Path, factory: tuple[str, type[Factory]]
) -> None:
    import fcntl

    url, _ = factory
    d = tmp_path / schematic_for(inventory()).id / "v1.13.5"
    d.mkdir(parents=True)
    with (d / ".lock").open("a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(EnvironmentNotReady, match="another cloudctl"):
            fetch_assets(inventory(), cache=tmp_path, factory_url=url)


def test_cli_image_fetch_json(tmp_path: Path, factory: tuple[str, type[Factory]]) -> None:
    from click.testing import CliRunner

    from cloudctl.cli import main
    from cloudctl.inventory import load_inventory

    url, f = factory
    example = Path(__file__).resolve().parents[2] / "inventory.example.yaml"
    inv_path = tmp_path / "inventory.yaml"
    inv_path.write_text(example.read_text())
    r = CliRunner().invoke(main, ["image", "fetch", "-i", str(inv_path), "--cache",
                                  str(tmp_path / "cache"), "--factory-url", url, "-o", "json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["schematic"] == schematic_for(load_inventory(inv_path).inventory).id
    kernel = Path(out["assets"]["kernel"]["path"])
    assert kernel.read_bytes() == f.files["kernel-amd64"]
    assert out["assets"]["kernel"]["checksum"] == "recorded"
    r = CliRunner().invoke(main, ["image", "fetch", "-i", str(inv_path), "--cache",
                                  str(tmp_path / "cache"), "--factory-url", url])
    assert r.exit_code == 0 and "cached" in r.stdout


def test_cli_image_fetch_unreachable_factory(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cloudctl.cli import main

    example = Path(__file__).resolve().parents[2] / "inventory.example.yaml"
    inv_path = tmp_path / "inventory.yaml"
    inv_path.write_text(example.read_text())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = CliRunner().invoke(main, ["image", "fetch", "-i", str(inv_path), "--cache",
                                  str(tmp_path / "c"), "--factory-url",
                                  f"http://127.0.0.1:{port}", "--timeout", "3"])
    assert r.exit_code in (6, 7), r.output
    assert "127.0.0.1" in r.stderr


def test_the_metal_disk_image_shares_the_cache_and_its_manifest(
    tmp_path: Path, factory: tuple[str, type[Factory]]
) -> None:
    """install-ssh's image: metal-<arch>.raw.xz of the same schematic and version, in the
    same directory and manifest as the PXE assets, each fetch leaving the others' records."""
    url, f = factory
    f.files["metal-amd64.raw.xz"] = os.urandom(900_000)
    inv = inventory()
    pxe = fetch_assets(inv, cache=tmp_path, factory_url=url)
    disk = fetch_assets(inv, cache=tmp_path, factory_url=url,
                        files=disk_image_files(inv.image.arch))
    assert disk.directory == pxe.directory
    assert disk.paths["disk"].read_bytes() == f.files["metal-amd64.raw.xz"]
    manifest = json.loads((disk.directory / MANIFEST).read_text())
    assert set(manifest) == {"kernel-amd64", "initramfs-amd64.xz", "metal-amd64.raw.xz"}
    f.log.clear()
    again = fetch_assets(inv, cache=tmp_path, factory_url="http://127.0.0.1:9",
                         files=disk_image_files(inv.image.arch))
    assert again.assets["disk"].checksum == "verified-cache" and f.log == []
