"""age encryption of the secrets bundle (pyrage): recipients from the inventory, identities
from an identity file. Pure functions over bytes; reading the identity file is the caller's.

Recipients are X25519 (``age1...``) or SSH Ed25519 (``ssh-ed25519 AAAA...``) public keys; an
identity file holds ``AGE-SECRET-KEY-1...`` lines (``#`` comments allowed), as ``age-keygen``
writes it.
"""

from __future__ import annotations

from typing import Any

import pyrage
from pyrage import ssh, x25519

from ..errors import Problem, SecretsError

ENV_IDENTITY = "CLOUDCTL_AGE_IDENTITY"
"""Environment variable naming the identity file that decrypts an encrypted bundle."""


def parse_recipient(text: str) -> Any:
    """The recipient object of one public key; ValueError naming what is wrong."""
    text = text.strip()
    try:
        if text.startswith("ssh-"):
            return ssh.Recipient.from_str(text)
        return x25519.Recipient.from_str(text)
    except pyrage.RecipientError as exc:
        raise ValueError(f"not an age recipient ({exc}): {text[:16]}...") from None


def recipient_problems(recipients: list[str], path: str = "secrets.recipients") -> list[Problem]:
    out = []
    for i, r in enumerate(recipients):
        try:
            parse_recipient(r)
        except ValueError as exc:
            out.append(Problem(f"{path}[{i}]", str(exc)))
    return out


def parse_identities(text: str, *, source: str) -> list[Any]:
    """Identities of an identity file's text; SecretsError naming the file (never the key)."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            out.append(x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            raise SecretsError(f"{source}:{n}: not an age identity (AGE-SECRET-KEY-1...)"
                               ) from None
    if not out:
        raise SecretsError(f"{source}: no age identity in the file")
    return out


def encrypt(plaintext: bytes, recipients: list[str]) -> bytes:
    if not recipients:
        raise SecretsError("no age recipients: add secrets.recipients to the inventory")
    try:
        return bytes(pyrage.encrypt(plaintext, [parse_recipient(r) for r in recipients]))
    except (ValueError, pyrage.EncryptError) as exc:
        raise SecretsError(f"age encryption failed: {exc}") from None


def decrypt(ciphertext: bytes, identities: list[Any], *, source: str, identity_file: str) -> bytes:
    try:
        return bytes(pyrage.decrypt(ciphertext, identities))
    except pyrage.DecryptError as exc:
        raise SecretsError(f"{source}: cannot decrypt with the identity in {identity_file} "
                           f"({exc}); is it one of the bundle's recipients?") from None
