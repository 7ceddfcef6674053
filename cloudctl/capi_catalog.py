"""Cluster API pins for tenant clusters (``flux/cluster-api.yaml``): the cluster-api-operator,
the four providers with their versions and contracts, the CRDs each installs, and the
Kubernetes versions tenants and the management cluster may run.

Pure data access (one cached parse); rendering, the inventory checks and the Kubernetes API
emulator all read the pins from here, so each fact has one source.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from .resources import read_text
from .util.yamlcache import safe_load as yaml_safe_load

__all__ = ["CapiCatalog", "Provider", "capi_catalog", "parse_minor"]


@dataclass(frozen=True)
class Provider:
    type: str
    """core | bootstrap | controlPlane | infrastructure"""
    kind: str
    """The cluster-api-operator resource kind (CoreProvider, ...)."""
    name: str
    version: str
    contract: str
    """The Cluster API contract the provider implements (v1beta1 or v1beta2)."""
    crds: tuple[str, ...]
    """Vendored CRD files (under flux/) the provider installs."""


@dataclass(frozen=True)
class CapiCatalog:
    operator_release: str
    operator_chart: str
    operator_version: str
    providers: tuple[Provider, ...]
    operator_crds: tuple[str, ...]
    """Under flux/: the operator chart's provider CRDs."""
    kamaji_crds: tuple[str, ...]
    """Under helm-values/: the Kamaji chart's TenantControlPlane and DataStore CRDs."""
    v1beta1_contract_ends: str
    tenant_min: str
    tenant_max_minor: str
    management_min: str

    def provider(self, type_: str) -> Provider:
        return next(p for p in self.providers if p.type == type_)


def parse_minor(version: str) -> tuple[int, int]:
    major, minor, *_ = version.lstrip("v").split(".")
    return int(major), int(minor)


@functools.cache
def capi_catalog() -> CapiCatalog:
    doc = yaml_safe_load(read_text("flux", "cluster-api.yaml"))
    kube = doc["kubernetes"]
    return CapiCatalog(
        operator_release=doc["operator"]["release"],
        operator_chart=doc["operator"]["chart"],
        operator_version=doc["operator"]["version"],
        providers=tuple(
            Provider(p["type"], p["kind"], p["name"], p["version"], p["contract"],
                     tuple(p["crds"]))
            for p in doc["providers"]
        ),
        operator_crds=tuple(doc["operatorCrds"]),
        kamaji_crds=tuple(doc["kamajiCrds"]),
        v1beta1_contract_ends=doc["v1beta1ContractEnds"],
        tenant_min=kube["tenant"]["min"],
        tenant_max_minor=kube["tenant"]["maxMinor"],
        management_min=kube["management"]["min"],
    )
