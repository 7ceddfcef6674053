"""MetalLB address pools and advertisements from ``inv.platform.metallb``.

They are shipped as the local chart ``metallb-config`` whose HelmRelease dependsOn ``metallb``:
Flux installs it only after the MetalLB chart (and with it the metallb.io CRDs) is Ready. The
chart's values hold the objects (name + spec per kind) and its one template prints them, so the
objects validated here are exactly the objects Helm renders.
"""

from __future__ import annotations

from typing import Any

from ...inventory.models import Inventory

# values key -> (apiVersion, kind); the storage versions of MetalLB 0.16.1's CRDs
KINDS: dict[str, tuple[str, str]] = {
    "ipAddressPools": ("metallb.io/v1beta1", "IPAddressPool"),
    "l2Advertisements": ("metallb.io/v1beta1", "L2Advertisement"),
    "bgpPeers": ("metallb.io/v1beta2", "BGPPeer"),
    "bgpAdvertisements": ("metallb.io/v1beta1", "BGPAdvertisement"),
}


def metallb_config_values(inv: Inventory) -> dict[str, Any]:
    mlb = inv.platform.metallb
    pools = [
        {
            "name": p.name,
            "spec": {"addresses": list(p.addresses), "autoAssign": p.auto_assign},
        }
        for p in mlb.pools
    ]
    pool_names = [p.name for p in mlb.pools]
    values: dict[str, Any] = {"ipAddressPools": pools}
    if mlb.mode == "l2":
        values["l2Advertisements"] = [{"name": "cloudctl", "spec": {"ipAddressPools": pool_names}}]
    else:
        peers = []
        for i, peer in enumerate(mlb.peers):
            peers.append(
                {
                    "name": peer.name or f"peer-{i + 1}",
                    "spec": {
                        "myASN": mlb.my_asn,
                        "peerASN": peer.asn,
                        "peerAddress": str(peer.address),
                    },
                }
            )
        values["bgpPeers"] = peers
        values["bgpAdvertisements"] = [{"name": "cloudctl", "spec": {"ipAddressPools": pool_names}}]
    return values


def metallb_objects(values: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
    """The custom resources the ``metallb-config`` chart renders from ``values``."""
    out: list[dict[str, Any]] = []
    for key, (api_version, kind) in KINDS.items():
        for item in values.get(key) or []:
            out.append(
                {
                    "apiVersion": api_version,
                    "kind": kind,
                    "metadata": {"name": item["name"], "namespace": namespace},
                    "spec": item.get("spec") or {},
                }
            )
    return out


_KINDS_DICT = " ".join(f'"{key}" (list "{api}" "{kind}")' for key, (api, kind) in KINDS.items())
_KEYS = " ".join(f'"{key}"' for key in KINDS)

CHART_TEMPLATE = (
    "{{- /* cloudctl: MetalLB pools and advertisements; one object per values entry */ -}}\n"
    "{{- $kinds := dict " + _KINDS_DICT + " }}\n"
    "{{- range $key := list " + _KEYS + " }}\n"
    """\
{{- $gvk := index $kinds $key }}
{{- range $item := default (list) (index $.Values $key) }}
---
apiVersion: {{ index $gvk 0 }}
kind: {{ index $gvk 1 }}
metadata:
  name: {{ $item.name }}
  namespace: {{ $.Release.Namespace }}
spec:
{{- toYaml (default (dict) $item.spec) | nindent 2 }}
{{- end }}
{{- end }}
"""
)
