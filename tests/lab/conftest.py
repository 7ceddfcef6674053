"""Lab tests reuse the integration helpers (netns, the QEMU test kernel and initramfs)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))
