"""`cloudctl validate / secrets init / render` end to end through the CLI."""

from __future__ import annotations

import base64
import os
import shutil
import stat
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cloudctl.cli import main
from cloudctl.secrets import SecretsStore

ROOT = Path(__file__).resolve().parents[2]
GOLDEN_SECRETS = ROOT / "tests" / "golden" / "secrets" / "rack1"


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "inventory.example.yaml", tmp_path / "inventory.yaml")
    # reuse a fixed bundle: PKI generation is slow and not what these tests are about
    shutil.copytree(GOLDEN_SECRETS, tmp_path / "secrets" / "rack1")
    return tmp_path


def run(*args: str, cwd: Path) -> tuple[int, str, str]:
    runner = CliRunner()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        r = runner.invoke(main, list(args), catch_exceptions=False)
    finally:
        os.chdir(old)
    return r.exit_code, r.stdout, r.stderr


def secret_needles() -> list[str]:
    bundle = SecretsStore(GOLDEN_SECRETS).load()
    return bundle.secret_strings()


def test_validate_ok_and_json(workdir: Path) -> None:
    code, out, _ = run("validate", "-i", "inventory.yaml", cwd=workdir)
    assert code == 0 and "valid" in out
    code, out, _ = run("validate", "-i", "inventory.yaml", "-o", "json", cwd=workdir)
    assert code == 0 and yaml.safe_load(out)["nodes"] == 5


def test_validate_bad_exit_2_json(workdir: Path) -> None:
    inv = workdir / "inventory.yaml"
    inv.write_text(inv.read_text().replace("ip: 10.20.0.22", "ip: 10.20.0.21"))
    code, _, err = run("validate", "-i", "inventory.yaml", "-o", "json", cwd=workdir)
    assert code == 2
    payload = yaml.safe_load(err)
    assert payload["problems"][0]["path"] == "nodes[4].ip"
    assert payload["problems"][0]["line"] > 0


def test_render_writes_tree_with_modes(workdir: Path) -> None:
    code, out, err = run("render", "-i", "inventory.yaml", "-o", "out", cwd=workdir)
    assert code == 0, err
    out_dir = workdir / "out"
    assert stat.S_IMODE(os.stat(out_dir / "talos/nodes/cp1.yaml").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(out_dir / "talos/talosconfig").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(out_dir / "gitops/platform/sources.yaml").st_mode) == 0o644
    for needle in secret_needles():
        assert needle not in out and needle not in err
    # no secret material anywhere in the GitOps tree (it is meant for Git)
    gitops_text = "\n".join(
        p.read_text(errors="replace") for p in (out_dir / "gitops").rglob("*") if p.is_file()
    )
    for needle in secret_needles():
        assert needle not in gitops_text


def test_render_twice_is_byte_identical(workdir: Path) -> None:
    run("render", "-i", "inventory.yaml", "-o", "a", cwd=workdir)
    run("render", "-i", "inventory.yaml", "-o", "b", cwd=workdir)
    a = {
        p.relative_to(workdir / "a"): p.read_bytes()
        for p in (workdir / "a").rglob("*")
        if p.is_file()
    }
    b = {
        p.relative_to(workdir / "b"): p.read_bytes()
        for p in (workdir / "b").rglob("*")
        if p.is_file()
    }
    assert a == b


def test_plan_after_changing_one_node(workdir: Path) -> None:
    run("render", "-i", "inventory.yaml", "-o", "out", cwd=workdir)
    code, out, _ = run("render", "-i", "inventory.yaml", "-o", "out", "--plan", cwd=workdir)
    assert code == 0 and "up to date" in out
    inv = workdir / "inventory.yaml"
    inv.write_text(
        inv.read_text().replace(
            'installDiskSelector: {model: "SAMSUNG MZ7*"}', "installDisk: /dev/sdb"
        )
    )
    code, out, _ = run("render", "-i", "inventory.yaml", "-o", "out", "--plan", cwd=workdir)
    changed = [line for line in out.splitlines()[1:]]
    assert changed == [line for line in changed if "talos/nodes/worker2.yaml" in line], out
    assert len(changed) == 1 and "[secret]" in changed[0]
    assert "/dev/sdb" not in out  # --plan never shows content


def test_bad_inventory_writes_nothing(workdir: Path) -> None:
    run("render", "-i", "inventory.yaml", "-o", "out", cwd=workdir)
    before = {p: p.read_bytes() for p in (workdir / "out").rglob("*") if p.is_file()}
    inv = workdir / "inventory.yaml"
    inv.write_text(inv.read_text().replace("vip: 10.20.0.10", "vip: 10.99.0.10"))
    code, _, err = run("render", "-i", "inventory.yaml", "-o", "out", cwd=workdir)
    assert code == 2 and "cluster.vip" in err
    assert {p: p.read_bytes() for p in (workdir / "out").rglob("*") if p.is_file()} == before
    code, _, _ = run("render", "-i", "inventory.yaml", "-o", "fresh", cwd=workdir)
    assert code == 2 and not (workdir / "fresh").exists()


def test_render_without_secrets(workdir: Path) -> None:
    shutil.rmtree(workdir / "secrets")
    code, _, err = run(
        "render", "-i", "inventory.yaml", "-o", "out", "--require-secrets", cwd=workdir
    )
    assert code == 3 and "secrets init" in err
    assert not (workdir / "out").exists()
    code, out, err = run("render", "-i", "inventory.yaml", "-o", "out", "--plan", cwd=workdir)
    assert code == 0 and "would be generated" in err and " 0 to add" not in out
    assert not (workdir / "secrets" / "rack1").exists() and not (workdir / "out").exists()
    # a first render generates the bundle once; the next render reuses it
    code, out, err = run("render", "-i", "inventory.yaml", "-o", "out", cwd=workdir)
    assert code == 0 and "secrets bundle generated" in err
    bundle = SecretsStore(workdir / "secrets" / "rack1").load()
    for needle in bundle.secret_strings():
        assert needle not in out and needle not in err
    first = (workdir / "out/talos/nodes/cp1.yaml").read_bytes()
    code, _, err = run("render", "-i", "inventory.yaml", "-o", "out", cwd=workdir)
    assert code == 0 and "generated" not in err
    assert (workdir / "out/talos/nodes/cp1.yaml").read_bytes() == first


def test_secrets_init_then_render(tmp_path: Path) -> None:
    shutil.copy(ROOT / "inventory.example.yaml", tmp_path / "inventory.yaml")
    code, out, err = run("secrets", "init", "-i", "inventory.yaml", cwd=tmp_path)
    assert code == 0, err
    store = SecretsStore(tmp_path / "secrets" / "rack1")
    bundle = store.load()
    for needle in bundle.secret_strings():
        assert needle not in out and needle not in err
    code, out, _ = run("secrets", "init", "-i", "inventory.yaml", cwd=tmp_path)
    assert code == 0 and "reusing" in out and store.load() == bundle
    code, _, _ = run("render", "-i", "inventory.yaml", "-o", "out", cwd=tmp_path)
    assert code == 0
    tc = yaml.safe_load((tmp_path / "out/talos/talosconfig").read_text())
    assert base64.b64decode(tc["contexts"]["rack1"]["ca"]) == bundle.os.crt
