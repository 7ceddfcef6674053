"""Boot assets: Talos kernel/initramfs from the Image Factory (cached), iPXE binaries from the host.

``fetch_assets`` is the backend of ``cloudctl image fetch``:

1. POST the inventory's schematic (canonical YAML) to ``<factory>/schematics`` and check that the
   ID the factory returns equals the one computed offline (``render.schematic``);
2. download ``/image/<id>/<version>/kernel-<arch>`` and ``initramfs-<arch>.xz`` into
   ``<cache>/<id>/<version>/`` — into a ``.part`` file first, resumed with an HTTP Range request
   after an interruption, then renamed atomically into place;
3. checksums: the public factory publishes none (its ``.sha256`` endpoints are Enterprise-only
   and answer 402). We ask for ``<asset>.sha256`` anyway and verify against it when offered;
   otherwise we record the SHA-256 of what we downloaded in ``SHA256SUMS.json`` and every later
   fetch verifies the cached file against that record (detects local corruption, not a
   compromised download). The result says which of the two happened.

Redirects (the factory answers 302 to its CDN) are followed for downloads only, never for the
schematic POST. Only the standard library HTTP client is used.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..atomic import write_atomic
from ..errors import EnvironmentNotReady, RemoteError
from ..inventory.models import Inventory
from ..render.schematic import schematic_for

CHUNK = 1 << 20
MANIFEST = "SHA256SUMS.json"
USER_AGENT = "cloudctl-image-fetch"

Progress = Callable[[str, int, int | None], None]
"""progress(asset name, bytes so far, total or None)."""


# --------------------------------------------------------------------------- Image Factory


@dataclass(frozen=True)
class FetchedAsset:
    name: str
    """'kernel' or 'initramfs.xz' (the names the HTTP boot server serves)."""
    path: Path
    sha256: str
    size: int
    url: str
    checksum: str
    """How the content was checked: 'factory' (matched the factory's published .sha256),
    'recorded' (no checksum offered; SHA-256 recorded after download), 'verified-cache'
    (cached file matched the recorded SHA-256)."""
    downloaded: bool


@dataclass(frozen=True)
class FetchedAssets:
    schematic_id: str
    version: str
    arch: str
    directory: Path
    assets: dict[str, FetchedAsset]

    @property
    def paths(self) -> dict[str, Path]:
        """name -> file, the form ``HttpServer(assets=...)`` takes."""
        return {name: a.path for name, a in self.assets.items()}


def asset_files(arch: str) -> dict[str, str]:
    """Served name -> Image Factory file name for an architecture."""
    return {"kernel": f"kernel-{arch}", "initramfs.xz": f"initramfs-{arch}.xz"}


def disk_image_files(arch: str) -> dict[str, str]:
    """The factory's xz-compressed raw ``metal`` disk image (what ``install-ssh`` writes)."""
    return {"disk": f"metal-{arch}.raw.xz"}


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cloudctl" / "assets"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None  # surface the 3xx as an HTTPError instead of following it


class _HttpOnlyRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        if not re.match(r"^https?://", newurl):
            raise RemoteError(f"{req.full_url}: redirect to non-HTTP location {newurl!r} refused")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_post_opener = urllib.request.build_opener(_NoRedirect)
_get_opener = urllib.request.build_opener(_HttpOnlyRedirect)


def register_schematic(factory_url: str, schematic_yaml: str, *, timeout: float = 30.0) -> str:
    """POST a schematic; return the ID the factory assigned."""
    url = f"{factory_url.rstrip('/')}/schematics"
    req = urllib.request.Request(
        url,
        data=schematic_yaml.encode("utf-8"),
        method="POST",
        headers={"Content-Type": "application/yaml", "User-Agent": USER_AGENT},
    )
    try:
        with _post_opener.open(req, timeout=timeout) as resp:
            status = resp.status
            body = resp.read(1 << 20)
    except urllib.error.HTTPError as exc:
        detail = exc.read(500).decode("utf-8", "replace").strip()
        raise RemoteError(
            f"Image Factory {url} refused the schematic: HTTP {exc.code} {detail}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise RemoteError(f"Image Factory {url} unreachable: {_reason(exc)}") from None
    if status not in (200, 201):
        raise RemoteError(f"Image Factory {url}: unexpected HTTP {status}")
    try:
        doc = json.loads(body)
        sid = doc["id"]
    except (ValueError, KeyError, TypeError):
        raise RemoteError(f'Image Factory {url}: answer is not {{"id": ...}} JSON') from None
    if not isinstance(sid, str) or not re.fullmatch(r"[0-9a-f]{64}", sid):
        raise RemoteError(f"Image Factory {url}: schematic id {sid!r} is not a SHA-256 hex")
    return sid


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason if reason is not None else exc)


def sha256_file(path: Path) -> str:
    """SHA-256 (hex) of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _read_manifest(directory: Path) -> dict[str, dict[str, object]]:
    try:
        data = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_manifest(directory: Path, manifest: dict[str, dict[str, object]]) -> None:
    write_atomic(directory / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n",
                 mode=0o644)


def _published_sha256(url: str, timeout: float) -> str | None:
    """The factory's published SHA-256 of an asset, or None when it offers none (402/404)."""
    req = urllib.request.Request(url + ".sha256", headers={"User-Agent": USER_AGENT})
    try:
        with _get_opener.open(req, timeout=timeout) as resp:
            text = resp.read(4096).decode("ascii", "replace")
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError) as exc:
        raise RemoteError(f"{url}.sha256 unreachable: {_reason(exc)}") from None
    m = re.match(r"^\s*([0-9a-fA-F]{64})\b", text)
    return m.group(1).lower() if m else None


def _total_from_content_range(value: str | None) -> int | None:
    m = re.match(r"^bytes (\d+)-(\d+)/(\d+|\*)$", (value or "").strip())
    if not m or m.group(3) == "*":
        return None
    return int(m.group(3))


def download(
    url: str,
    dest: Path,
    *,
    timeout: float = 60.0,
    progress: Progress | None = None,
    name: str = "",
    expected_sha256: str | None = None,
) -> tuple[int, str]:
    """Download ``url`` to ``dest`` via ``dest.part``, resuming a partial ``.part`` with Range.

    When complete, the SHA-256 of the ``.part`` is computed and checked against
    ``expected_sha256`` (if given) *before* the atomic rename, so ``dest`` only ever holds
    verified content. Returns (size, sha256)."""
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = _get_opener.open(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            # The partial file is not a prefix we can extend (changed upstream?): start over.
            part.unlink()
            return download(
                url,
                dest,
                timeout=timeout,
                progress=progress,
                name=name,
                expected_sha256=expected_sha256,
            )
        raise RemoteError(f"download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise RemoteError(f"download {url}: {_reason(exc)}") from None
    with resp:
        status = resp.status
        if status == 206:
            cr = resp.headers.get("Content-Range", "")
            if not cr.startswith(f"bytes {have}-"):
                raise RemoteError(f"download {url}: resumed at the wrong offset ({cr!r})")
            total = _total_from_content_range(cr)
            mode = "ab"
        elif status == 200:
            have = 0  # server ignored Range: restart from scratch
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            mode = "wb"
        else:
            raise RemoteError(f"download {url}: unexpected HTTP {status}")
        done = have
        try:
            with part.open(mode) as f:
                while chunk := resp.read(CHUNK):
                    f.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(name, done, total)
                f.flush()
                os.fsync(f.fileno())
        except (OSError, urllib.error.URLError, http.client.HTTPException) as exc:
            raise RemoteError(
                f"download {url} interrupted at {done} bytes ({_reason(exc)}); "
                "run the fetch again to resume"
            ) from None
    if total is not None and done != total:
        raise RemoteError(
            f"download {url} ended at {done} of {total} bytes; run the fetch again to resume"
        )
    actual = sha256_file(part)
    if expected_sha256 is not None and actual != expected_sha256:
        bad = dest.with_name(dest.name + ".bad")
        os.replace(part, bad)
        raise RemoteError(
            f"{url}: SHA-256 {actual} does not match the factory's published "
            f"{expected_sha256} (kept as {bad})"
        )
    os.replace(part, dest)
    return done, actual


def fetch_assets(
    inv: Inventory,
    *,
    cache: Path | None = None,
    factory_url: str | None = None,
    timeout: float = 60.0,
    progress: Progress | None = None,
    files: dict[str, str] | None = None,
) -> FetchedAssets:
    """Register the inventory's schematic and make its kernel/initramfs (or ``files``: served
    name -> factory file name, e.g. ``disk_image_files``) available in the cache.

    When the cache already holds both files and they match their recorded SHA-256, nothing is
    asked of the factory at all: a rack without Internet access boots from a cache filled
    beforehand (the cache is keyed by the schematic ID cloudctl computes offline)."""
    schematic = schematic_for(inv)
    offline_id = schematic.id
    factory = (factory_url or inv.image.installer.factory_url).rstrip("/")
    version = inv.cluster.talos_version
    directory = (cache or default_cache_dir()) / offline_id / version
    wanted = files if files is not None else asset_files(inv.image.arch)
    cached = _verified_cache(directory, factory, offline_id, version, inv.image.arch, wanted)
    if cached is not None:
        return cached
    remote_id = register_schematic(factory, schematic.canonical_yaml(), timeout=timeout)
    if remote_id != offline_id:
        raise RemoteError(
            f"Image Factory {factory} assigned schematic id {remote_id} but cloudctl computed "
            f"{offline_id} for the same schematic; refusing to use assets whose content "
            "we cannot tie to the inventory"
        )
    arch = inv.image.arch
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory):
        return _fetch_into(directory, factory, offline_id, version, arch, wanted, timeout,
                           progress)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Exclusive lock on a cache directory, so two fetches never write the same .part file."""
    with (directory / ".lock").open("a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EnvironmentNotReady(
                f"another cloudctl is fetching into {directory}; wait for it to finish"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _verified_cache(
    directory: Path, factory: str, offline_id: str, version: str, arch: str,
    files: dict[str, str],
) -> FetchedAssets | None:
    """The cached assets when every one is present and matches its recorded SHA-256."""
    if not directory.is_dir():
        return None
    manifest = _read_manifest(directory)
    result: dict[str, FetchedAsset] = {}
    for name, remote_name in files.items():
        dest = directory / remote_name
        recorded = manifest.get(remote_name, {})
        recorded_sha = recorded.get("sha256") if isinstance(recorded, dict) else None
        if not dest.is_file() or not isinstance(recorded_sha, str):
            return None
        actual = sha256_file(dest)
        if actual != recorded_sha:
            return None  # corrupted: the normal path fetches it again
        url = f"{factory}/image/{offline_id}/{version}/{remote_name}"
        result[name] = FetchedAsset(
            name, dest, actual, dest.stat().st_size, url, "verified-cache", False
        )
    return FetchedAssets(offline_id, version, arch, directory, result)


def _fetch_into(
    directory: Path,
    factory: str,
    offline_id: str,
    version: str,
    arch: str,
    files: dict[str, str],
    timeout: float,
    progress: Progress | None,
) -> FetchedAssets:
    manifest = _read_manifest(directory)
    result: dict[str, FetchedAsset] = {}
    for name, remote_name in files.items():
        url = f"{factory}/image/{offline_id}/{version}/{remote_name}"
        dest = directory / remote_name
        recorded = manifest.get(remote_name, {})
        recorded_sha = recorded.get("sha256") if isinstance(recorded, dict) else None
        if dest.exists() and isinstance(recorded_sha, str):
            actual = sha256_file(dest)
            if actual == recorded_sha:
                result[name] = FetchedAsset(
                    name, dest, actual, dest.stat().st_size, url, "verified-cache", False
                )
                continue
            # Corrupted or tampered cache entry: never serve it; fetch it again.
            dest.unlink()
        published = _published_sha256(url, timeout)
        size, actual = download(
            url, dest, timeout=timeout, progress=progress, name=name, expected_sha256=published
        )
        how = "factory" if published is not None else "recorded"
        manifest[remote_name] = {
            "sha256": actual,
            "size": size,
            "url": url,
            "checksum": how,
            "fetched_at": int(time.time()),
        }
        _write_manifest(directory, manifest)
        result[name] = FetchedAsset(name, dest, actual, size, url, how, True)
    return FetchedAssets(offline_id, version, arch, directory, result)


# --------------------------------------------------------------------------- iPXE binaries

IPXE_DIR = Path("/usr/lib/ipxe")
REQUIRED_IPXE = ("undionly.kpxe", "snponly.efi", "ipxe.efi")
"""TFTP name -> must exist (BIOS, x86-64 UEFI via SNP, x86-64 UEFI with native drivers)."""
ARM64_NAME = "ipxe-arm64.efi"
_ARM64_CANDIDATES = ("ipxe-arm64.efi", "arm64-efi/snponly.efi", "arm64-efi/ipxe.efi")


def find_ipxe_binaries(directory: Path | None = None) -> dict[str, Path]:
    """TFTP-root name -> iPXE binary, from ``directory`` or Debian's ``ipxe`` package.

    Required: undionly.kpxe, snponly.efi, ipxe.efi (EnvironmentNotReady names any missing one).
    Optional: ipxe-arm64.efi (arm64 UEFI); left out when absent — see ``arm64_note``.
    """
    where = Path(directory) if directory is not None else IPXE_DIR
    found: dict[str, Path] = {}
    missing: list[str] = []
    for name in REQUIRED_IPXE:
        p = where / name
        if p.is_file():
            found[name] = p
        else:
            missing.append(name)
    if missing:
        hint = (
            "install Debian's 'ipxe' package (apt-get install ipxe)"
            if directory is None
            else "put them there or point the iPXE directory option elsewhere"
        )
        raise EnvironmentNotReady(
            f"iPXE binaries missing from {where}: {', '.join(missing)}; {hint}"
        )
    for rel in _ARM64_CANDIDATES:
        p = where / rel
        if p.is_file():
            found[ARM64_NAME] = p
            break
    return found


def arm64_note(found: dict[str, Path]) -> str | None:
    """A message to show when no arm64 iPXE was found (arm64 UEFI clients cannot PXE-boot)."""
    if ARM64_NAME in found:
        return None
    return (
        f"no arm64 iPXE build found ({', '.join(_ARM64_CANDIDATES)}): arm64 UEFI machines "
        "(DHCP arch 11) will not be offered a boot file"
    )


def stage_tftp_root(binaries: dict[str, Path], root: Path) -> dict[str, Path]:
    """Copy the iPXE binaries into a TFTP root (copies, not symlinks: the TFTP and HTTP path
    policies refuse links that leave the root). Returns name -> staged path."""
    root.mkdir(parents=True, exist_ok=True)
    staged: dict[str, Path] = {}
    for name, src in binaries.items():
        dest = root / name
        tmp = root / f".{name}.tmp"
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
        staged[name] = dest
    with contextlib.suppress(OSError):
        os.chmod(root, 0o755)
    return staged
