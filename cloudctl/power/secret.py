"""Resolve a BMC ``passwordRef`` (``env:VAR`` or ``file:/path``); the value is never logged."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import SecretsError


def resolve_password(node: str, ref: str) -> str:
    scheme, _, rest = ref.partition(":")
    if scheme == "env":
        value = os.environ.get(rest)
        if value is None:
            raise SecretsError(
                f"node {node}: BMC password reference {ref}: environment variable {rest} "
                "is not set")
        return value
    if scheme == "file":
        try:
            return Path(rest).read_text().rstrip("\r\n")
        except OSError as exc:
            raise SecretsError(
                f"node {node}: BMC password reference {ref}: cannot read {rest}: "
                f"{exc.strerror}") from None
    raise SecretsError(f"node {node}: BMC password reference {ref!r} is not env:VAR or file:/path")
