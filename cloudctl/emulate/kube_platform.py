"""Values validators for the Kubernetes API emulator, from cloudctl's platform catalog.

``platform_values_validators()`` maps each chart of ``flux/platform.yaml`` that has a vendored
``values.schema.json`` or a cloudctl contract to a check of the values a HelmRelease would
install (the catalog's ``chart_values_problems``: the chart's schema for that chart version,
with the chart's defaults merged under the values as Helm does, plus cloudctl's contract), so
the emulator's helm-controller fails such a release with ``InstallFailed`` like Helm would.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import Problem
from ..render.gitops.catalog import CatalogRelease, load_catalog
from ..render.gitops.values import chart_values_problems
from .kube_reconcile import ValuesValidator

__all__ = ["platform_values_validators"]


def _validator(release: CatalogRelease) -> ValuesValidator:
    def check(values: Mapping[str, Any], version: str) -> Iterable[Problem]:
        return chart_values_problems(release, version, values)

    return check


def platform_values_validators() -> dict[str, ValuesValidator]:
    """Chart name (release name for OCI charts) -> values check, for every catalog release
    with a values schema or a contract."""
    out: dict[str, ValuesValidator] = {}
    for release in load_catalog().releases.values():
        if release.schemas or release.contract:
            key = (release.chart or release.name).rstrip("/").rsplit("/", 1)[-1]
            out[key] = _validator(release)
    return out
