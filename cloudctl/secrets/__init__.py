"""Cluster PKI and tokens: generation (Talos-compatible), store, talosconfig."""

from .bundle import SecretsBundle, bundle_from_yaml, bundle_to_yaml, generate_bundle, talosconfig
from .pki import CertAndKey, issue_cert, load_certificate, load_private_key
from .store import SecretsStore, default_secrets_dir, write_private

__all__ = [
    "CertAndKey",
    "SecretsBundle",
    "SecretsStore",
    "bundle_from_yaml",
    "bundle_to_yaml",
    "default_secrets_dir",
    "generate_bundle",
    "issue_cert",
    "load_certificate",
    "load_private_key",
    "talosconfig",
    "write_private",
]
