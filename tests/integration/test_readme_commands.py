"""The README's two commands, exactly as written, in a fresh virtual environment (no system
site packages) holding a copy of the checkout: the main job ends with the platform Ready, and the
test command installs its tools and runs pytest (here collect-only, through PYTEST_ADDOPTS, so
the suite does not run itself recursively)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> tuple[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)\n```", section, re.S)
    assert len(blocks) == 2, blocks
    return blocks[0].strip(), blocks[1].strip()


def test_readme_names_two_commands_and_ci_runs_the_second() -> None:
    main, tests = readme_commands()
    assert "cloudctl bootstrap -i inventory.example.yaml" in main
    ci = (ROOT / ".ci/run").read_text()
    assert tests in ci.splitlines(), "the CI script must run exactly the README test command"


@pytest.mark.slow
def test_readme_commands_in_a_fresh_venv(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    main, tests = readme_commands()
    checkout = tmp_path / "cloudctl"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        src = ROOT / rel
        if src.is_file():
            (checkout / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, checkout / rel)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(PATH=f"{env_dir / 'bin'}:{env['PATH']}", VIRTUAL_ENV=str(env_dir),
               PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_ROOT_USER_ACTION="ignore")
    try:
        run = subprocess.run(["bash", "-c", main], cwd=checkout, env=env, capture_output=True,
                             text=True, timeout=900)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "cluster rack1: cluster rack1 is up" in run.stdout
    finally:
        subprocess.run([str(env_dir / "bin" / "cloudctl"), "emulate", "stop", "-i",
                        "inventory.example.yaml"], cwd=checkout, env=env, capture_output=True,
                       timeout=60)
    collect = subprocess.run(["bash", "-c", tests], cwd=checkout,
                             env={**env, "PYTEST_ADDOPTS": "--collect-only -q"},
                             capture_output=True, text=True, timeout=900)
    assert collect.returncode == 0, (collect.stdout[-2000:], collect.stderr[-2000:])
    # pytest ran and collected the suite (-q twice prints a count per file)
    assert re.search(r"tests/unit/test_pipeline\.py: \d+", collect.stdout) or re.search(
        r"\d+ tests collected", collect.stdout), collect.stdout[-2000:]
