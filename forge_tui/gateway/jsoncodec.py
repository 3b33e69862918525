"""JSON on the request path: orjson where it gives the same answer as the standard library, the
standard library where it might not.

orjson parses and serialises 4-15x faster than ``json``, which on a small chat request is a few
microseconds of the gateway's budget. It differs in two places that matter to a proxy, and both
go to the standard library instead:

- integers beyond 64 bits come back from orjson as floats (a caller's value would change on its
  way upstream), so a body with a run of 19 or more digits is parsed by ``json``, exactly; large
  bodies (images, audio) too, where the digit scan would cost more than it saves;
- orjson refuses to serialise those integers, so ``dumps`` falls back when it does.

Anything orjson refuses to parse is handed to the caller's strict parser (``validate``), whose
error words are the ones callers have seen all along.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["FAST_PARSE_MAX", "dumps", "fast_loads", "loads", "peek"]

FAST_PARSE_MAX = 64 * 1024  # bytes: past this the digit scan costs more than orjson saves
# A run of 19 digits: a number orjson might not keep exact (int64 has 19). Found by mapping every
# digit to "0" and everything else to " ", then one substring search: ~1 ns a byte, where a regex
# takes ~8 (``find``, not ``in``, which on bytes first raises and clears a TypeError).
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_RUN = b"0" * 19
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # one for the process
_dumps = orjson.dumps
_loads = orjson.loads


def fast_loads(raw: bytes) -> tuple[bool, Any]:
    """(True, value) when orjson parsed ``raw`` exactly; (False, None) when the strict standard
    parser must decide (too large, a long digit run, or anything orjson refused)."""
    if len(raw) > FAST_PARSE_MAX or raw.translate(_DIGITS_AS_ZERO).find(_LONG_RUN) >= 0:
        return False, None
    try:
        return True, _loads(raw)
    except orjson.JSONDecodeError:
        return False, None


def peek(raw: bytes) -> Any:
    """A small backend answer parsed to be read, never forwarded (token counts, timings): exactness
    past 64 bits does not matter there. None when it is larger than ``FAST_PARSE_MAX`` or not JSON."""
    if len(raw) > FAST_PARSE_MAX:
        return None
    try:
        return _loads(raw)
    except orjson.JSONDecodeError:
        return None


def loads(raw: bytes) -> Any:
    """Parse a backend's JSON; ``ValueError`` when it is not JSON (``json.loads``'s rules decide)."""
    ok, value = fast_loads(raw)
    return value if ok else json.loads(raw)


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON: the text ``json`` would write, except floats in their shortest spelling
    and NaN or infinity (which JSON cannot carry) written as null."""
    try:
        return _dumps(obj)
    except TypeError:  # an integer past 64 bits, or a key that is not a string: the standard library
        return _ENCODER.encode(obj).encode()
