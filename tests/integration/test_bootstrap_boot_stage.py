"""The bare-metal boot stage of `cloudctl bootstrap` for real (root): in a network namespace,
with assets from a cache filled beforehand (no Internet) and a machine simulated with real
clients (udhcpc as PXE ROM and as iPXE, tftp-hpa, curl), `bootstrap --only boot` stages the iPXE
binaries, serves DHCP/TFTP/HTTP until the node has its initramfs, and records the stage.

Talos itself cannot run here, so the later stages are covered against the emulated rack."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from netns import Lab, require_root, with_catalog_versions
from test_boot_service import CP1, INVENTORY, NODE_CP1, pxe_boot

from cloudctl.boot.assets import MANIFEST, asset_files
from cloudctl.inventory import parse_inventory
from cloudctl.render.schematic import schematic_for

pytestmark = pytest.mark.root
ROOT = Path(__file__).resolve().parents[2]


def _fill_cache(cache: Path, inv_text: str) -> None:
    inv = parse_inventory(inv_text).inventory
    directory = cache / "cloudctl" / "assets" / schematic_for(inv).id / inv.cluster.talos_version
    directory.mkdir(parents=True)
    manifest = {}
    for remote, data in zip(
        asset_files(inv.image.arch).values(), (b"K" * 2_000_000, b"I" * 3_000_000), strict=True
    ):
        (directory / remote).write_bytes(data)
        manifest[remote] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    (directory / MANIFEST).write_text(json.dumps(manifest))


def test_boot_stage_serves_until_the_node_has_its_initramfs(tmp_path: Path) -> None:
    require_root("network namespaces, DHCP/TFTP ports")
    for tool in ("busybox", "tftp", "curl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
    if not Path("/usr/lib/ipxe/undionly.kpxe").is_file():
        pytest.skip("Debian's ipxe package is not installed (/usr/lib/ipxe)")
    inv_text = with_catalog_versions(INVENTORY + NODE_CP1)
    (tmp_path / "inventory.yaml").write_text(inv_text)
    shutil.copytree(ROOT / "tests/golden/secrets/rack1", tmp_path / "secrets/lab")
    _fill_cache(tmp_path / "cache", inv_text)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    argv = [
        "env",
        *(f"{k}={v}" for k, v in env.items()),
        sys.executable,
        "-m",
        "cloudctl.cli",
        "bootstrap",
        "-i",
        str(tmp_path / "inventory.yaml"),
        "--only",
        "boot",
        "--timeout",
        "90",
        "-o",
        "json",
    ]
    with Lab("bbs") as lab:
        srv = lab.add_host("srv", ip="10.20.0.2/24")
        cli = lab.add_host("cp1", mac=CP1)
        proc = srv.popen(argv, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:  # probe (3 s) + start
                if ":8080 " in srv.run(["ss", "-ltn"], check=False):
                    break
                time.sleep(0.2)
            sizes = pxe_boot(cli, tmp_path)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    assert sizes["kernel"] == 2_000_000 and sizes["initramfs"] == 3_000_000
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    done = [e for e in events if e["stage"] == "boot" and e["kind"] == "stage-done"]
    assert done and "every node fetched its initramfs" in done[0]["message"]
    state = json.loads((tmp_path / "clusters/lab/state.json").read_text())
    assert state["stages"]["boot"]["status"] == "done"
    # the iPXE binaries were staged into the cluster's TFTP root
    assert (tmp_path / "clusters/lab/tftp/undionly.kpxe").is_file()
