"""tests/ssh shares tests/integration's helpers (``netns``): put that directory on ``sys.path``
so ``from sshhost import SshHost`` (which imports ``netns``) works from here."""

from __future__ import annotations

import sys
from pathlib import Path

_INTEGRATION = str(Path(__file__).resolve().parent.parent / "integration")
if _INTEGRATION not in sys.path:
    sys.path.insert(0, _INTEGRATION)
