"""`cloudctl pxe serve` as a process in a network namespace, booted by real clients (root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from netns import Lab, require_root, with_catalog_versions
from test_boot_service import CP1, INVENTORY, NODE_CP1, NODE_W1, boot_files, pxe_boot  # noqa: F401

from cloudctl.boot.service import PHASES

pytestmark = pytest.mark.root
ROOT = Path(__file__).resolve().parents[2]


def _serve(srv, tmp_path: Path, inv_text: str, files, *extra: str) -> subprocess.Popen[str]:
    root, assets = files
    inv = tmp_path / "inventory.yaml"
    inv.write_text(with_catalog_versions(inv_text))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [
        "env",
        *(f"{k}={v}" for k, v in env.items() if k in ("PYTHONPATH", "PATH", "HOME")),
        sys.executable,
        "-m",
        "cloudctl.cli",
        "pxe",
        "serve",
        "-i",
        str(inv),
        "--kernel",
        str(assets["kernel"]),
        "--initramfs",
        str(assets["initramfs.xz"]),
        "--ipxe-dir",
        str(root),
        "-o",
        "json",
        *extra,
    ]
    return srv.popen(argv, stderr=subprocess.PIPE, text=True)


def _wait_listening(srv, port: int = 8080, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = srv.run(["ss", "-ltn"], check=False)
        if f":{port} " in out:
            return
        time.sleep(0.2)
    raise AssertionError("pxe serve did not start listening")


def test_pxe_serve_boots_a_node_and_stops_by_itself(tmp_path: Path, boot_files) -> None:  # noqa: F811
    require_root("network namespaces, DHCP/TFTP ports")
    with Lab("cpx") as lab:
        srv = lab.add_host("srv", ip="10.20.0.2/24")
        cli = lab.add_host("cp1", mac=CP1)
        proc = _serve(srv, tmp_path, INVENTORY + NODE_CP1, boot_files, "--timeout", "90")
        try:
            _wait_listening(srv)
            pxe_boot(cli, tmp_path)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    final = lines[-1]
    assert final["result"] == "complete" and set(final["nodes"]["cp1"]) == set(PHASES)
    kinds = {e["kind"] for e in lines[:-1]}
    assert {"dhcp-offer", "dhcp-ack", "tftp-sent", "http-sent"} <= kinds


def test_pxe_serve_timeout_names_missing_nodes(tmp_path: Path, boot_files) -> None:  # noqa: F811
    require_root("network namespaces, DHCP/TFTP ports")
    with Lab("cpy") as lab:
        srv = lab.add_host("srv", ip="10.20.0.2/24")
        proc = _serve(srv, tmp_path, INVENTORY + NODE_CP1 + NODE_W1, boot_files, "--timeout", "8")
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 7, err
    assert "never seen: cp1, w1" in err
    assert json.loads(out.splitlines()[-1])["missing"] == ["cp1", "w1"]
