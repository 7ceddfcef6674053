"""The one deep merge of cloudctl.

Used for Helm values (defaults, overlays, inventory overrides; ``helm-values/``) and for the
per-node ``configPatches`` of the machine configs (which also delete keys). Rules:

- mapping onto mapping: merged key by key, recursively; keys keep their first position, new keys
  are appended in ``over``'s order (rendered YAML keeps insertion order, so this fixes bytes);
- anything else in ``over`` (lists included) replaces what was there, as a deep copy;
- with ``delete``, a value for which ``delete(value)`` is true removes the key instead, and
  delete markers inside a mapping that lands where there was none are dropped.

The inputs are never modified.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["deep_merge"]


def deep_merge(
    base: Mapping[str, Any],
    over: Mapping[str, Any],
    *,
    delete: Callable[[Any], bool] | None = None,
) -> dict[str, Any]:
    """A new mapping: ``over`` deep-merged onto ``base`` (see the module doc for the rules)."""
    out: dict[str, Any] = copy.deepcopy(dict(base))
    for key, value in over.items():
        if delete is not None and delete(value):
            out.pop(key, None)
        elif isinstance(value, Mapping):
            target = out.get(key)
            out[key] = deep_merge(
                target if isinstance(target, Mapping) else {}, value, delete=delete
            )
        else:
            out[key] = copy.deepcopy(value)
    return out
