"""JSON text for state files that are rewritten often and read by people now and then.

``json.dumps(..., indent=2)`` is produced by the json module's pure-Python encoder (only
``indent=None`` uses its C encoder), several times slower on documents of a few tens of KB that
a run rewrites hundreds of times (the pipeline's ``state.json``, the emulated rack's
``rack.json``). ``entry_per_line`` keeps such files readable, one line per top-level entry
and per entry of the large mappings in them, and builds each line with the C encoder.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any


class Encoded(str):
    """A value's JSON text, already encoded (with sorted keys): written as it is. Lets a
    caller reuse the text of entries that did not change since the last write."""


def _text(value: Any) -> str:
    return value if isinstance(value, Encoded) else json.dumps(value, sort_keys=True)


def entry_per_line(doc: Mapping[str, Any], nested: Iterable[str] = ()) -> str:
    """``doc`` as JSON with sorted keys, each top-level entry on its own line; each entry of
    the (mapping) values under the ``nested`` keys on its own line one level deeper; values
    there may be ``Encoded``. ``json.loads`` of the result equals ``doc`` with every
    ``Encoded`` value decoded."""
    dump = json.dumps
    deeper = set(nested)
    out = []
    for key in sorted(doc):
        value = doc[key]
        if key in deeper and isinstance(value, Mapping) and value:
            inner = ",\n".join(f"    {dump(k)}: {_text(v)}" for k, v in sorted(value.items()))
            out.append(f"  {dump(key)}: {{\n{inner}\n  }}")
        else:
            out.append(f"  {dump(key)}: {dump(value, sort_keys=True)}")
    return "{\n" + ",\n".join(out) + "\n}\n"
