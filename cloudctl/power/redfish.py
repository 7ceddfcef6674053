"""Redfish power over plain HTTPS (``requests``): one ComputerSystem per BMC."""

from __future__ import annotations

import warnings
from typing import Any

import requests

from ..errors import RemoteError, Timeout

RESET = {"on": "On", "off": "ForceOff", "restart": "ForceRestart"}


class RedfishBmc:
    def __init__(
        self, node: str, address: str, port: int, username: str, password: str, *,
        verify: bool | str = True, system_id: str | None = None, timeout: float = 15.0,
    ) -> None:
        self.node = node
        self.base = f"https://{address}:{port}"
        self.where = f"node {node}: Redfish BMC {self.base}"
        self.system_id = system_id
        self.timeout = timeout
        self.session = requests.Session()
        self.session.auth = (username, password)
        self.verify = verify  # per request: REQUESTS_CA_BUNDLE would override session.verify
        self._system: str | None = None

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # InsecureRequestWarning with bmc.insecure
                resp = self.session.request(
                    method, self.base + path, json=body, timeout=self.timeout, verify=self.verify)
        except requests.exceptions.SSLError as exc:
            raise RemoteError(
                f"{self.where}: TLS verification failed ({_reason(exc)}); set bmc.insecure: true "
                "for a self-signed BMC certificate") from None
        except requests.exceptions.Timeout:
            raise Timeout(f"{self.where}: no answer within {self.timeout:.0f}s") from None
        except requests.exceptions.ConnectionError as exc:
            raise RemoteError(f"{self.where}: unreachable ({_reason(exc)})") from None
        if resp.status_code in (401, 403):
            raise RemoteError(
                f"{self.where}: authentication failed (HTTP {resp.status_code}); check "
                "bmc.username and the password behind bmc.passwordRef")
        if resp.status_code >= 400:
            raise RemoteError(
                f"{self.where}: {method} {path} failed: HTTP {resp.status_code} "
                f"{_message(resp)}")
        if not resp.content:
            return {}
        try:
            return resp.json()
        except ValueError:
            raise RemoteError(f"{self.where}: {method} {path}: answer is not JSON") from None

    def system(self) -> str:
        if self._system is None:
            if self.system_id:
                self._system = f"/redfish/v1/Systems/{self.system_id}"
            else:
                members = self._request("GET", "/redfish/v1/Systems").get("Members", [])
                if len(members) != 1:
                    raise RemoteError(
                        f"{self.where}: has {len(members)} systems; set bmc.systemId to one "
                        f"of {[m.get('@odata.id', '?').rsplit('/', 1)[-1] for m in members]}")
                self._system = str(members[0]["@odata.id"])
        return self._system

    def power_state(self) -> str:
        state = self._request("GET", self.system()).get("PowerState")
        if not isinstance(state, str):
            raise RemoteError(f"{self.where}: the system reports no PowerState")
        return state.lower()

    def reset(self, kind: str) -> None:
        sysdoc = self._request("GET", self.system())
        action = sysdoc.get("Actions", {}).get("#ComputerSystem.Reset", {})
        target = action.get("target")
        allowed = action.get("ResetType@Redfish.AllowableValues")
        if not target:
            raise RemoteError(f"{self.where}: unsupported action: the system has no Reset action")
        if allowed is not None and kind not in allowed:
            raise RemoteError(
                f"{self.where}: unsupported action: ResetType {kind} (the BMC allows "
                f"{', '.join(allowed)})")
        self._request("POST", target, {"ResetType": kind})

    def pxe_once(self) -> None:
        self._request("PATCH", self.system(), {
            "Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}})


def _reason(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "No route to host", "Name or service not known",
                   "Network is unreachable", "CERTIFICATE_VERIFY_FAILED", "timed out"):
        if marker in text:
            return marker
    return text[-160:]


def _message(resp: requests.Response) -> str:
    try:
        err = resp.json().get("error", {})
        info = err.get("@Message.ExtendedInfo") or [{}]
        return str(info[0].get("Message") or err.get("message") or "")[:200]
    except (ValueError, AttributeError):
        return resp.text[:200]
