"""Status conditions of Kubernetes objects (``status.conditions[]``, type/status/reason/...)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["condition"]


def condition(obj: Mapping[str, Any], ctype: str) -> Mapping[str, Any] | None:
    """The condition of type ``ctype`` in ``obj``'s status, or None when it has none."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return cond  # type: ignore[no-any-return]
    return None
