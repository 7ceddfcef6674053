"""Per-node ``configPatches``: a deep merge onto the node's v1alpha1 document.

Semantics (applied in order, after everything cloudctl renders, so a patch has the last word):

- mapping onto mapping: merged key by key, recursively;
- a list replaces the list (or value) it lands on; lists are never merged element-wise
  (Talos' own strategic merge appends to some lists and merges others by key, which makes the
  result depend on the field; replacing is predictable and visible in the rendered file);
- ``null`` (YAML ``~``) deletes the key; so does a mapping ``{"$patch": "delete"}``, the
  spelling Talos/Kubernetes strategic-merge patches use;
- any other value replaces what was there.

The patch targets only the v1alpha1 document. The inputs are not modified.
"""

from __future__ import annotations

import copy
from typing import Any

DELETE_DIRECTIVE = {"$patch": "delete"}


def _deletes(value: Any) -> bool:
    return value is None or value == DELETE_DIRECTIVE


def merge_patch(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A new mapping: ``patch`` deep-merged onto ``base`` (see module doc for the rules)."""
    out = {k: copy.deepcopy(v) for k, v in base.items()}
    for key, value in patch.items():
        if _deletes(value):
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value)
        elif isinstance(value, dict):
            out[key] = _strip_deletes(value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _strip_deletes(value: dict[str, Any]) -> dict[str, Any]:
    """A mapping that lands where there was none: delete markers inside it have nothing to
    delete and are dropped."""
    return {
        k: _strip_deletes(v) if isinstance(v, dict) else copy.deepcopy(v)
        for k, v in value.items()
        if not _deletes(v)
    }
