"""CLI start-up: fresh-process wall time of `cloudctl --help`, `cloudctl bootstrap --help` and
`cloudctl validate` on the example inventory (median of N). Run by hand:

    python bench/cli_startup.py [--runs 7]

No peer exists for this figure; it prints the medians against the goal (issue 14: --help
<= 0.2 s) and what `python -c pass` costs on the same machine (the floor).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=True, env=ENV)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# as installed by `pip install .`: with compiled bytecode, even where the environment sets
# PYTHONDONTWRITEBYTECODE for a source checkout
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    a = ap.parse_args()
    py = [sys.executable]
    floor = timed([*py, "-c", "pass"], a.runs)
    cases = {
        "--help": [*py, "-m", "cloudctl", "--help"],
        "bootstrap --help": [*py, "-m", "cloudctl", "bootstrap", "--help"],
        "validate": [*py, "-m", "cloudctl", "validate", "-i", "inventory.example.yaml"],
    }
    print(f"python -c pass: {floor:.3f} s (the floor)")
    for name, argv in cases.items():
        t = timed(argv, a.runs)
        print(f"cloudctl {name}: {t:.3f} s median of {a.runs}"
              + (f" (goal <= 0.2 s: ratio to goal {t / 0.2:.2f})" if name == "--help" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
