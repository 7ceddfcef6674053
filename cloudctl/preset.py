"""cloudctl's Cozystack preset (``talos/preset.yaml``): inventory defaults, the KubePrism
endpoint, and the machine-config settings added on top of ``talosctl gen config``.

The one source of these facts: the inventory model takes its defaults from here, the machine
configs their kernel modules, sysctls, files, kubelet and API-server settings, and the Flux
install and Cilium values the KubePrism endpoint. Loaded once; every accessor returns a fresh
copy of mutable data, so a caller can never change what the next render sees.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Any

from .errors import RenderError
from .resources import read_text
from .util.yamlcache import safe_load as yaml_safe_load

__all__ = ["KubePrism", "Preset", "preset"]

PRESET_FILE = "preset.yaml"


@dataclass(frozen=True)
class KubePrism:
    host: str
    port: int


@dataclass(frozen=True)
class Preset:
    cluster_domain: str
    extensions: tuple[str, ...]
    kube_prism: KubePrism
    max_pods: int
    _kernel_modules: tuple[dict[str, Any], ...]
    _sysctls: dict[str, str]
    _files: tuple[dict[str, Any], ...]
    _admission_control: tuple[dict[str, Any], ...]
    _audit_policy: dict[str, Any]

    def kernel_modules(self) -> list[dict[str, Any]]:
        """``machine.kernel.modules``."""
        return copy.deepcopy(list(self._kernel_modules))

    def sysctls(self) -> dict[str, str]:
        """``machine.sysctls``."""
        return dict(self._sysctls)

    def files(self) -> list[dict[str, Any]]:
        """``machine.files`` entries (keys in Talos' documented order: content, permissions,
        path, op)."""
        return [
            {
                "content": f["content"],
                "permissions": f["permissions"],
                "path": f["path"],
                "op": f["op"],
            }
            for f in self._files
        ]

    def admission_control(self) -> list[dict[str, Any]]:
        """``cluster.apiServer.admissionControl``."""
        return copy.deepcopy(list(self._admission_control))

    def audit_policy(self) -> dict[str, Any]:
        """``cluster.apiServer.auditPolicy``."""
        return copy.deepcopy(self._audit_policy)


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise RenderError(f"talos/{PRESET_FILE}: {what} (broken install?)")


def parse_preset(text: str) -> Preset:
    data = yaml_safe_load(text) or {}
    _require(isinstance(data, dict), "not a mapping")
    defaults = data.get("defaults") or {}
    prism = data.get("kubePrism") or {}
    machine = data.get("machine") or {}
    cluster = data.get("cluster") or {}
    extensions = defaults.get("extensions") or []
    _require(
        isinstance(extensions, list) and all(isinstance(e, str) for e in extensions),
        "defaults.extensions must be a list of names",
    )
    _require(isinstance(defaults.get("clusterDomain"), str), "defaults.clusterDomain missing")
    _require(
        isinstance(prism.get("host"), str) and isinstance(prism.get("port"), int),
        "kubePrism needs host and port",
    )
    sysctls = machine.get("sysctls") or {}
    _require(
        all(isinstance(v, str) for v in sysctls.values()),
        "machine.sysctls values must be strings (quote them)",
    )
    files = machine.get("files") or []
    for i, f in enumerate(files):
        _require(
            isinstance(f, dict) and {"path", "op", "permissions", "content"} <= set(f),
            f"machine.files[{i}] needs path, op, permissions and content",
        )
    return Preset(
        cluster_domain=defaults["clusterDomain"],
        extensions=tuple(extensions),
        kube_prism=KubePrism(host=prism["host"], port=prism["port"]),
        max_pods=int((machine.get("kubelet") or {})["maxPods"]),
        _kernel_modules=tuple(machine.get("kernelModules") or ()),
        _sysctls={str(k): v for k, v in sysctls.items()},
        _files=tuple(files),
        _admission_control=tuple(cluster.get("admissionControl") or ()),
        _audit_policy=dict(cluster.get("auditPolicy") or {}),
    )


@functools.cache
def preset() -> Preset:
    """The shipped preset (``talos/preset.yaml``), parsed once."""
    return parse_preset(read_text("talos", PRESET_FILE))
