"""JSON that orjson reads but cannot write back.

orjson reads nesting up to 1,024 levels but writes only 254 ("Recursion limit reached", a
``TypeError``). Every body the service forwards upstream, answers with or stores is written
with orjson, so a request or an upstream answer nested between 255 and 1,024 levels deep
was read, then failed where it was written: a 500 on every forwarded route, a lost live diff.
"""

from __future__ import annotations

import orjson

MAX_WRITTEN_DEPTH = 254
"""The deepest nesting orjson writes."""


def too_deep_to_write(raw: bytes | str, value: object) -> bool:
    """Whether ``value`` (read from ``raw``) nests deeper than orjson writes. Costs two counts
    of ``raw`` for a usual body: only one with more brackets than the limit is written to see."""
    opening = raw.count(b"[") + raw.count(b"{") if isinstance(raw, bytes) \
        else raw.count("[") + raw.count("{")
    if opening <= MAX_WRITTEN_DEPTH:
        return False
    try:
        orjson.dumps(value)
    except TypeError:
        return True
    return False
