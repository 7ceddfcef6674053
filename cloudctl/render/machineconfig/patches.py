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

from typing import Any

from ...util.merge import deep_merge

DELETE_DIRECTIVE = {"$patch": "delete"}


def _deletes(value: Any) -> bool:
    return value is None or value == DELETE_DIRECTIVE


def merge_patch(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A new mapping: ``patch`` deep-merged onto ``base`` (see module doc for the rules)."""
    return deep_merge(base, patch, delete=_deletes)
