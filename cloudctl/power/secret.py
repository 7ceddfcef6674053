"""Resolve a BMC ``passwordRef`` (``env:VAR`` or ``file:/path``); the value is never logged."""

from __future__ import annotations

from ..secrets.refs import resolve_secret_ref


def resolve_password(node: str, ref: str) -> str:
    return resolve_secret_ref(node, ref, "BMC password")
