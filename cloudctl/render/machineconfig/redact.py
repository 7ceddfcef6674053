"""Redaction of machine configs and talosconfigs for dry-run diffs and logs.

Every secret value is replaced by :data:`REDACTED`; everything else (document order, key
order, public certificates, all other values) is kept so two redacted configs diff
meaningfully. A value is secret when its key is one of :data:`SECRET_KEYS` anywhere in any
document (``key`` covers every private key: CAs, service account, talosconfig client key;
``token`` the trustd and bootstrap tokens), or when it sits at one of :data:`SECRET_PATHS`
(``cluster.secret``: a name too generic to redact everywhere).
"""

from __future__ import annotations

from typing import Any

from cloudctl.render.files import to_yaml_docs
from cloudctl.talos_schema import split_documents

REDACTED = "**REDACTED**"

SECRET_KEYS: frozenset[str] = frozenset(
    {
        "key",
        "token",
        "secretboxEncryptionSecret",
        "aescbcEncryptionSecret",
        "bootstraptoken",
        "secretboxencryptionsecret",
        "password",
        "identityToken",
        "privateKey",
        "presharedKey",
    }
)

SECRET_PATHS: frozenset[tuple[str, ...]] = frozenset(
    {
        ("cluster", "secret"),
    }
)


def _redact(node: Any, path: tuple[str, ...]) -> Any:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            sub = (*path, str(k))
            if (str(k) in SECRET_KEYS or sub in SECRET_PATHS) and not isinstance(v, dict | list):
                out[k] = REDACTED if v not in (None, "") else v
            else:
                out[k] = _redact(v, sub)
        return out
    if isinstance(node, list):
        return [_redact(item, path) for item in node]
    return node


def redact_document(doc: Any) -> Any:
    """A copy of one parsed document with every secret value replaced by REDACTED."""
    return _redact(doc, ())


def redact_config(text: str) -> str:
    """The same YAML (all documents, same order) with every secret replaced by REDACTED.

    Comments are not preserved (the text is re-serialised deterministically). Raises
    :class:`InputError` if the text is not YAML or a document is not a mapping.
    """
    return to_yaml_docs(redact_document(d) for d in split_documents(text))
