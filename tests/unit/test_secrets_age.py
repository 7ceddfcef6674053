"""age encryption of the secrets bundle: `cloudctl secrets encrypt|decrypt`, and every command
reading an encrypted-only bundle through an identity file (real pyrage, real X25519 keys)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from pyrage import x25519

from cloudctl.errors import SecretsError
from cloudctl.inventory import load_inventory
from cloudctl.secrets import SecretsStore
from cloudctl.secrets.age import ENV_IDENTITY

ROOT = Path(__file__).resolve().parents[2]
GOLDEN_SECRETS = ROOT / "tests/golden/secrets/rack1"


def _key(tmp: Path, name: str) -> tuple[Path, str]:
    ident = x25519.Identity.generate()
    path = tmp / f"{name}.key"
    path.write_text(f"# created for a test\n# public key: {ident.to_public()}\n{ident}\n")
    path.chmod(0o600)
    return path, str(ident.to_public())


def _workdir(tmp: Path, *recipients: str) -> Path:
    text = (ROOT / "inventory.example.yaml").read_text()
    if recipients:
        text += "secrets:\n  recipients:\n" + "".join(f"    - {r}\n" for r in recipients)
    (tmp / "inventory.yaml").write_text(text)
    shutil.copytree(GOLDEN_SECRETS, tmp / "secrets/rack1")
    return tmp


def cli(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != ENV_IDENTITY}
    return subprocess.run([sys.executable, "-m", "cloudctl.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={**base, "PYTHONPATH": str(ROOT), **(env or {})})


def test_store_round_trip_and_wrong_identity(tmp_path: Path) -> None:
    alice, alice_pub = _key(tmp_path, "alice")
    mallory, _ = _key(tmp_path, "mallory")
    shutil.copytree(GOLDEN_SECRETS, tmp_path / "s")
    plain = SecretsStore(tmp_path / "s", identity=None)
    before = plain.load()
    written = plain.encrypt([alice_pub], remove_plain=True)
    assert [p.name for p in written] == ["secrets.yaml.age", "admin.yaml.age"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in written)
    assert not plain.plain_exists() and plain.exists()
    for p in written:
        data = p.read_bytes()
        assert data.startswith(b"age-encryption.org/v1\n")
        for s in before.secret_strings():
            assert s.encode() not in data
    with pytest.raises(SecretsError, match=r"secrets\.yaml\.age is encrypted: give its age "):
        plain.load()
    with pytest.raises(SecretsError, match=r"cannot decrypt with the identity in .*mallory"):
        SecretsStore(tmp_path / "s", identity=mallory).load()
    assert SecretsStore(tmp_path / "s", identity=alice).load() == before
    # an encrypted-only store is never replaced by a new PKI
    again, created = SecretsStore(tmp_path / "s", identity=alice).init()
    assert not created and again == before
    with pytest.raises(SecretsError, match="remove the encrypted bundle yourself"):
        SecretsStore(tmp_path / "s", identity=alice).init(force=True)
    # a failed decrypt writes nothing
    with pytest.raises(SecretsError):
        SecretsStore(tmp_path / "s", identity=mallory).decrypt()
    assert not plain.plain_exists()
    out = SecretsStore(tmp_path / "s", identity=alice).decrypt()
    assert [p.name for p in out] == ["secrets.yaml", "admin.yaml"]
    assert plain.load() == before


def test_identity_file_errors_name_the_file_not_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("# nothing\nAGE-SECRET-KEY-1NOTAKEY\n")
    shutil.copytree(GOLDEN_SECRETS, tmp_path / "s")
    _, pub = _key(tmp_path, "k")
    SecretsStore(tmp_path / "s", identity=None).encrypt([pub], remove_plain=True)
    with pytest.raises(SecretsError) as exc:
        SecretsStore(tmp_path / "s", identity=bad).load()
    assert f"{bad}:2: not an age identity" in str(exc.value)
    assert "NOTAKEY" not in str(exc.value)
    with pytest.raises(SecretsError, match="cannot read the age identity"):
        SecretsStore(tmp_path / "s", identity=tmp_path / "missing.key").load()


def test_inventory_recipients_are_checked() -> None:
    from cloudctl.errors import InputError
    from cloudctl.inventory import parse_inventory

    text = (ROOT / "inventory.example.yaml").read_text()
    with pytest.raises(InputError) as exc:
        parse_inventory(text + "secrets:\n  recipients: [age1notakey]\n")
    assert "secrets.recipients[0]" in str(exc.value)
    ok = parse_inventory(text + "secrets:\n  recipients:\n    - ssh-ed25519 AAAAC3NzaC1lZDI1"
                         "NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@site\n")
    assert ok.inventory.secrets.recipients[0].startswith("ssh-ed25519 ")
    assert load_inventory(ROOT / "inventory.example.yaml").inventory.secrets.recipients == []


def test_cli_encrypt_decrypt_and_commands_reading_an_encrypted_bundle(tmp_path: Path) -> None:
    alice, alice_pub = _key(tmp_path, "alice")
    _, bob_pub = _key(tmp_path, "bob")
    work = _workdir(tmp_path, alice_pub, bob_pub)
    rendered = cli(work, "render", "-i", "inventory.yaml", "-o", "before")
    assert rendered.returncode == 0, rendered.stderr
    enc = cli(work, "secrets", "encrypt", "-i", "inventory.yaml", "--remove-plain")
    assert enc.returncode == 0, enc.stderr
    assert "encrypted to 2 recipient(s)" in enc.stdout and "plain files removed" in enc.stdout
    # without an identity: exit 3 naming the encrypted file and how to give the identity
    r = cli(work, "render", "-i", "inventory.yaml", "-o", "after")
    assert r.returncode == 3 and "secrets.yaml.age is encrypted" in r.stderr
    assert ENV_IDENTITY in r.stderr
    assert not (work / "after").exists()
    # with the identity: byte-identical render
    r = cli(work, "render", "-i", "inventory.yaml", "-o", "after",
            env={ENV_IDENTITY: str(alice)})
    assert r.returncode == 0, r.stderr
    before = {p.relative_to(work / "before"): p.read_bytes()
              for p in (work / "before").rglob("*") if p.is_file()}
    after = {p.relative_to(work / "after"): p.read_bytes()
             for p in (work / "after").rglob("*") if p.is_file()}
    assert before == after
    assert not (work / "secrets/rack1/secrets.yaml").exists()  # reading wrote no plain file
    # no recipients in the inventory: a clear error, nothing written
    (work / "plain.yaml").write_text((ROOT / "inventory.example.yaml").read_text())
    r = cli(work, "secrets", "encrypt", "-i", "plain.yaml", "--secrets", "secrets/rack1",
            "--identity", str(alice))
    assert r.returncode == 3 and "no secrets.recipients" in r.stderr
    dec = cli(work, "secrets", "decrypt", "-i", "inventory.yaml", "--identity", str(alice))
    assert dec.returncode == 0, dec.stderr
    assert (work / "secrets/rack1/secrets.yaml").read_bytes() == (
        GOLDEN_SECRETS / "secrets.yaml").read_bytes()
    for out in (enc, dec, rendered):
        for secret in SecretsStore(GOLDEN_SECRETS, identity=None).load().secret_strings():
            assert secret not in out.stdout + out.stderr
