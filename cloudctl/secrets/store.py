"""On-disk secrets store: ``<dir>/secrets.yaml`` (Talos format) and ``<dir>/admin.yaml``.

Files are 0600 in a 0700 directory, written atomically (temp file + fsync + rename). The store
reads and writes through a ``Codec`` so an encrypting codec (age) can be added without touching
callers; today only the plaintext codec exists and ``cloudctl secrets`` says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..atomic import write_atomic
from ..errors import SecretsError
from .bundle import SecretsBundle, admin_to_yaml, bundle_from_yaml, bundle_to_yaml, generate_bundle

SECRETS_FILE = "secrets.yaml"
ADMIN_FILE = "admin.yaml"


class Codec(Protocol):
    name: str

    def encode(self, plaintext: bytes) -> bytes: ...

    def decode(self, stored: bytes) -> bytes: ...


class PlainCodec:
    name = "plain"

    def encode(self, plaintext: bytes) -> bytes:
        return plaintext

    def decode(self, stored: bytes) -> bytes:
        return stored


def write_private(path: Path, data: bytes) -> None:
    """Atomically write ``data`` to ``path`` with mode 0600 (directory created 0700)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, data, mode=0o600)


@dataclass(frozen=True)
class SecretsStore:
    directory: Path
    codec: Codec = field(default_factory=PlainCodec)

    @property
    def secrets_path(self) -> Path:
        return self.directory / SECRETS_FILE

    @property
    def admin_path(self) -> Path:
        return self.directory / ADMIN_FILE

    def exists(self) -> bool:
        return self.secrets_path.is_file()

    def load(self) -> SecretsBundle:
        if not self.exists():
            raise SecretsError(
                f"no secrets bundle at {self.secrets_path}: run `cloudctl secrets init` first"
            )
        try:
            text = self.codec.decode(self.secrets_path.read_bytes()).decode("utf-8")
            admin = (
                self.codec.decode(self.admin_path.read_bytes()).decode("utf-8")
                if self.admin_path.is_file()
                else None
            )
        except OSError as exc:
            raise SecretsError(f"cannot read {self.secrets_path}: {exc.strerror}") from None
        try:
            return bundle_from_yaml(text, admin)
        except SecretsError as exc:
            raise SecretsError(f"{self.secrets_path}: {exc.message}") from None

    def save(self, bundle: SecretsBundle) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)
        write_private(self.admin_path, self.codec.encode(admin_to_yaml(bundle).encode()))
        write_private(self.secrets_path, self.codec.encode(bundle_to_yaml(bundle).encode()))

    def init(self, *, force: bool = False) -> tuple[SecretsBundle, bool]:
        """Generate and save a bundle unless one exists. Returns (bundle, created)."""
        if self.exists() and not force:
            return self.load(), False
        bundle = generate_bundle()
        self.save(bundle)
        return bundle, True


def default_secrets_dir(inventory_path: Path, cluster_name: str) -> Path:
    """Default store location: ``<inventory dir>/secrets/<cluster>/``."""
    return inventory_path.resolve().parent / "secrets" / cluster_name
