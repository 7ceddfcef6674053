"""Resolve a secret reference (``env:VAR`` or ``file:/path``); the value is never logged.

The inventory never holds a secret itself, only where to find it: BMC passwords
(``bmc.passwordRef``), SSH keys and their passphrases (``ssh.keyRef``, ``ssh.passphraseRef``).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import SecretsError


def resolve_secret_ref(node: str, ref: str, what: str, *, strip: bool = True) -> str:
    """The secret ``ref`` points at. ``what`` names it in errors ("BMC password", "SSH key");
    ``strip`` drops trailing newlines (passwords), not wanted for key files."""
    scheme, _, rest = ref.partition(":")
    if scheme == "env":
        value = os.environ.get(rest)
        if value is None:
            raise SecretsError(
                f"node {node}: {what} reference {ref}: environment variable {rest} is not set")
        return value.rstrip("\r\n") if strip else value
    if scheme == "file":
        try:
            text = Path(rest).read_text()
        except OSError as exc:
            raise SecretsError(
                f"node {node}: {what} reference {ref}: cannot read {rest}: "
                f"{exc.strerror}") from None
        return text.rstrip("\r\n") if strip else text
    raise SecretsError(f"node {node}: {what} reference {ref!r} is not env:VAR or file:/path")
