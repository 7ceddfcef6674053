"""Kubernetes API failures as cloudctl errors.

``kubernetes.client.exceptions.ApiException`` and urllib3 errors never leave ``cloudctl.kube``:
they become a ``KubeApiError`` (a ``RemoteError``, exit code 6) that names the object (kind,
namespace, name) and carries the API server's ``Status``: reason, message and, for a rejected
object, each offending field (``details.causes[].field``).
"""

from __future__ import annotations

import json
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException

from ..errors import CloudctlError, Problem, RemoteError

__all__ = ["KubeApiError", "KubeUnreachable", "from_status", "translate"]


class KubeApiError(RemoteError):
    """The API server answered with an error ``Status``."""

    def __init__(
        self,
        what: str,
        *,
        code: int,
        reason: str,
        message: str,
        causes: list[Problem] | None = None,
    ) -> None:
        self.what = what
        self.code = code
        self.reason = reason
        self.api_message = message
        self.causes = list(causes or [])
        text = f"{what}: {reason or 'error'} ({code}): {message}"
        # the API message usually names the fields already; list any it left out
        missing = [c for c in self.causes if c.path and c.path not in message]
        if missing:
            text += "\n" + "\n".join(f"  - {c}" for c in missing)
        super().__init__(text)

    @property
    def fields(self) -> list[str]:
        return [c.path for c in self.causes if c.path]


class KubeUnreachable(RemoteError):
    """No HTTP answer at all: connection refused, TLS failure, timeout."""


def from_status(what: str, code: int, body: bytes | str | None) -> KubeApiError:
    """Build the error from an HTTP status and a (possibly non-JSON) response body."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    status: Any = None
    try:
        status = json.loads(text) if text else None
    except ValueError:
        status = None
    if isinstance(status, dict) and status.get("kind") == "Status":
        details = status.get("details") or {}
        causes = [
            Problem(str(c.get("field") or "").lstrip("."), str(c.get("message") or ""))
            for c in details.get("causes") or []
            if isinstance(c, dict)
        ]
        return KubeApiError(
            what,
            code=int(status.get("code") or code),
            reason=str(status.get("reason") or ""),
            message=str(status.get("message") or text),
            causes=causes,
        )
    return KubeApiError(what, code=code, reason="", message=text.strip() or f"HTTP {code}")


def translate(exc: BaseException, *, what: str, server: str) -> CloudctlError:
    """A library exception as the cloudctl error naming ``what`` and the API server."""
    if isinstance(exc, ApiException):
        if not exc.status:  # the client's wrapping of a TLS failure
            return KubeUnreachable(
                f"{what}: cannot reach the Kubernetes API at {server}: {exc.reason}"
            )
        return from_status(what, int(exc.status), exc.body)
    if isinstance(exc, urllib3.exceptions.HTTPError):
        reason = getattr(exc, "reason", None) or exc
        return KubeUnreachable(
            f"{what}: cannot reach the Kubernetes API at {server}: {type(exc).__name__}: {reason}"
        )
    if isinstance(exc, OSError):
        return KubeUnreachable(f"{what}: cannot reach the Kubernetes API at {server}: {exc}")
    raise exc
