"""On-disk secrets store: ``<dir>/secrets.yaml`` (Talos format) and ``<dir>/admin.yaml``, and
their age-encrypted forms ``secrets.yaml.age`` / ``admin.yaml.age`` (the ones that may go into
Git).

Files are 0600 in a 0700 directory, written atomically (temp file + fsync + rename). ``load``
reads the plain files when they are there, else the encrypted ones with the identity file the
store was given (default: ``$CLOUDCTL_AGE_IDENTITY``). A store that holds only an encrypted
bundle never generates a new one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import write_atomic
from ..errors import SecretsError
from . import age
from .bundle import SecretsBundle, admin_to_yaml, bundle_from_yaml, bundle_to_yaml, generate_bundle

SECRETS_FILE = "secrets.yaml"
ADMIN_FILE = "admin.yaml"
AGE_SUFFIX = ".age"


def identity_from_env() -> Path | None:
    value = os.environ.get(age.ENV_IDENTITY)
    return Path(value) if value else None


def write_private(path: Path, data: bytes) -> None:
    """Atomically write ``data`` to ``path`` with mode 0600 (directory created 0700)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, data, mode=0o600)


@dataclass(frozen=True)
class SecretsStore:
    directory: Path
    identity: Path | None = field(default_factory=identity_from_env)
    """age identity file that decrypts the encrypted bundle."""

    @property
    def secrets_path(self) -> Path:
        return self.directory / SECRETS_FILE

    @property
    def admin_path(self) -> Path:
        return self.directory / ADMIN_FILE

    @staticmethod
    def encrypted(path: Path) -> Path:
        return path.with_name(path.name + AGE_SUFFIX)

    def plain_exists(self) -> bool:
        return self.secrets_path.is_file()

    def encrypted_exists(self) -> bool:
        return self.encrypted(self.secrets_path).is_file()

    def exists(self) -> bool:
        return self.plain_exists() or self.encrypted_exists()

    def _identities(self, needed_for: Path) -> list[object]:
        if self.identity is None:
            raise SecretsError(
                f"{needed_for} is encrypted: give its age identity file (--identity or "
                f"${age.ENV_IDENTITY})")
        try:
            text = self.identity.read_text()
        except OSError as exc:
            raise SecretsError(f"cannot read the age identity {self.identity}: "
                               f"{exc.strerror}") from None
        return age.parse_identities(text, source=str(self.identity))

    def _read(self, path: Path) -> str | None:
        """The plain text of ``path`` or of its encrypted form; None when neither exists."""
        try:
            if path.is_file():
                return path.read_text("utf-8")
            sealed = self.encrypted(path)
            if not sealed.is_file():
                return None
            data = age.decrypt(sealed.read_bytes(), self._identities(sealed), source=str(sealed),
                               identity_file=str(self.identity))
            return data.decode("utf-8")
        except OSError as exc:
            raise SecretsError(f"cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise SecretsError(f"{path}: not UTF-8 text") from None

    def load(self) -> SecretsBundle:
        text = self._read(self.secrets_path)
        if text is None:
            raise SecretsError(
                f"no secrets bundle at {self.secrets_path}: run `cloudctl secrets init` first"
            )
        admin = self._read(self.admin_path)
        try:
            return bundle_from_yaml(text, admin)
        except SecretsError as exc:
            raise SecretsError(f"{self.secrets_path}: {exc.message}") from None

    def save(self, bundle: SecretsBundle) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)
        write_private(self.admin_path, admin_to_yaml(bundle).encode())
        write_private(self.secrets_path, bundle_to_yaml(bundle).encode())

    def encrypt(self, recipients: list[str], *, remove_plain: bool = False) -> list[Path]:
        """Write the encrypted bundle for ``recipients`` (from the plain files, or re-encrypted
        from the encrypted ones with the identity); returns the files written."""
        bundle = self.load()
        written = []
        for path, text in ((self.secrets_path, bundle_to_yaml(bundle)),
                           (self.admin_path, admin_to_yaml(bundle))):
            sealed = self.encrypted(path)
            write_private(sealed, age.encrypt(text.encode(), recipients))
            written.append(sealed)
        if remove_plain:
            for path in (self.secrets_path, self.admin_path):
                path.unlink(missing_ok=True)
        return written

    def decrypt(self) -> list[Path]:
        """Write the plain files from the encrypted bundle (needs the identity). Everything is
        decrypted and checked in memory first: a failure leaves the files as they were."""
        if not self.encrypted_exists():
            raise SecretsError(f"no encrypted bundle at {self.encrypted(self.secrets_path)}")
        texts: dict[Path, str] = {}
        for path in (self.secrets_path, self.admin_path):
            sealed = self.encrypted(path)
            if sealed.is_file():
                data = age.decrypt(sealed.read_bytes(), self._identities(sealed),
                                   source=str(sealed), identity_file=str(self.identity))
                texts[path] = data.decode("utf-8", "replace")
        try:
            bundle_from_yaml(texts[self.secrets_path], texts.get(self.admin_path))
        except SecretsError as exc:
            raise SecretsError(f"{self.encrypted(self.secrets_path)}: {exc.message}") from None
        for path, text in texts.items():
            write_private(path, text.encode())
        return list(texts)

    def init(self, *, force: bool = False) -> tuple[SecretsBundle, bool]:
        """Generate and save a bundle unless one exists (plain or encrypted). Returns (bundle,
        created). ``force`` replaces a plain bundle; an encrypted one is never overwritten."""
        if self.exists() and not force:
            return self.load(), False
        if force and self.encrypted_exists():
            raise SecretsError(f"{self.encrypted(self.secrets_path)} exists: remove the "
                               "encrypted bundle yourself before generating a new PKI")
        bundle = generate_bundle()
        self.save(bundle)
        return bundle, True


def default_secrets_dir(inventory_path: Path, cluster_name: str) -> Path:
    """Default store location: ``<inventory dir>/secrets/<cluster>/``."""
    return inventory_path.resolve().parent / "secrets" / cluster_name
