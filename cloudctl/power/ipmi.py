"""IPMI power over RMCP+ with pyghmi.

pyghmi (1.6) proposes cipher suite 17 (SHA-256) and does not read which suite the BMC chose; a
BMC that answers with suite 3 (SHA-1, e.g. virtualbmc) then crashes the client. ``_negotiate``
makes the client follow the BMC's choice (the RMCP+ Open Session Response carries it)."""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from ..errors import CloudctlError, RemoteError, Timeout

_patched = threading.Lock()
_done = False
_commands: dict[tuple[tuple[str, Any], ...], Any] = {}
_commands_lock = threading.Lock()


def _negotiate() -> None:
    global _done
    with _patched:
        if _done:
            return
        from pyghmi.ipmi.private import session

        original = session.Session._got_rmcp_response

        def got_rmcp_response(self: Any, data: Any) -> Any:
            # Open Session Response: status at [1]; authentication algorithm at [16]
            if (len(data) >= 36 and data[1] == 0 and self.attemptedhash == 256
                    and data[16] == 1):  # the BMC chose RAKP-HMAC-SHA1: follow it
                self.attemptedhash = 1
                self.currhashlib = hashlib.sha1
                self.currhashlen = 12
            return original(self, data)

        session.Session._got_rmcp_response = got_rmcp_response
        _done = True


class IpmiBmc:
    def __init__(self, node: str, address: str, port: int, username: str, password: str) -> None:
        self.node = node
        self.where = f"node {node}: IPMI BMC {address}:{port}"
        self.args = {"bmc": address, "port": port, "userid": username, "password": password}
        self._cmd: Any = None

    def _command(self) -> Any:
        """pyghmi keeps one RMCP+ session per BMC and credentials in the process (with its own
        keep-alive); a second ``Command`` for the same BMC waits on the first one's session, so
        the process shares one ``Command`` per BMC."""
        if self._cmd is None:
            _negotiate()
            from pyghmi import exceptions
            from pyghmi.ipmi import command

            key = tuple(sorted(self.args.items()))
            with _commands_lock:
                cmd = _commands.get(key)
                if cmd is None or getattr(cmd.ipmi_session, "broken", False):
                    try:
                        cmd = command.Command(**self.args)
                    except exceptions.IpmiException as exc:
                        raise self._error(exc) from None
                    _commands[key] = cmd
            self._cmd = cmd
        return self._cmd

    def _error(self, exc: Exception) -> CloudctlError:
        text = str(exc)
        low = text.lower()
        if "password" in low or "unauthorized" in low or "rakp" in low:
            return RemoteError(
                f"{self.where}: authentication failed ({text}); check bmc.username and the "
                "password behind bmc.passwordRef")
        if "timeout" in low or "timed out" in low or "no longer connected" in low:
            return Timeout(f"{self.where}: unreachable (no answer: {text})")
        return RemoteError(f"{self.where}: {text}")

    def _call(self, fn: str, *args: Any, **kw: Any) -> Any:
        from pyghmi import exceptions

        cmd = self._command()
        try:
            result = getattr(cmd, fn)(*args, **kw)
        except exceptions.IpmiException as exc:
            raise self._error(exc) from None
        if isinstance(result, dict) and "error" in result:
            raise RemoteError(f"{self.where}: {fn}: {result['error']}")
        return result

    def power_state(self) -> str:
        return str(self._call("get_power")["powerstate"]).lower()

    def set_power(self, state: str) -> None:
        self._call("set_power", state, wait=False)

    def pxe_once(self) -> None:
        self._call("set_bootdev", "network", persist=False)
