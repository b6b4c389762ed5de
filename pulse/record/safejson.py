"""Turn anything a task hands us into bounded, JSON-safe data.

Task authors put arbitrary objects in progress messages, failure details and results; what
Pulse stores and pushes must stay valid JSON of a bounded size whatever they pass, and making it
so must cost little and never raise, even for a value whose ``repr`` raises, a huge integer, a
circular structure or one that shares a big list a million times over.
"""

import json
import math
from itertools import islice
from typing import Any

MAX_CHARS = 16_384
MAX_DEPTH = 12
MAX_ITEMS = 500
MAX_KEY = 200
# Larger integers become text: browsers read JSON numbers as doubles, and str() of an integer of
# over 4,300 digits raises.
MAX_INT_BITS = 64


class _Budget:
    """Characters left to clean: past the limit the value is cut anyway, so stop early."""

    def __init__(self, chars: int) -> None:
        self.left = chars

    def take(self, chars: int) -> None:
        self.left -= chars


def _text(value: Any, limit: int) -> str:
    """``str(value)`` cut to ``limit``, whatever ``__str__`` does."""
    try:
        return str(value)[:limit]
    except Exception:  # a broken __str__ (or a huge int) must not fail the task
        return f"<unprintable {type(value).__name__}>"[:limit]


def _repr(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return repr(bytes(value[:MAX_CHARS]))[:MAX_CHARS]
    if isinstance(value, int):  # only those over MAX_INT_BITS get here
        return f"<int of {value.bit_length()} bits>"
    try:
        return repr(value)[:MAX_CHARS]
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


def _more(size: int) -> str:
    """The marker that ends a container cut at MAX_ITEMS entries."""
    return f"... {size - MAX_ITEMS} more"


def _clean(value: Any, depth: int, budget: _Budget) -> Any:
    budget.take(8)  # every node costs something: the work is bounded by the budget
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value.bit_length() <= MAX_INT_BITS:
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else str(value)
    if isinstance(value, str):
        budget.take(min(len(value), MAX_CHARS))
        return str(value[:MAX_CHARS])
    if depth <= 0:
        return "..."
    if isinstance(value, dict):
        out = {}
        for key, item in islice(value.items(), MAX_ITEMS):
            if budget.left < 0:
                break
            name = _text(key, MAX_KEY)
            budget.take(len(name))
            out[name] = _clean(item, depth - 1, budget)
        if len(value) > MAX_ITEMS:
            out["..."] = _more(len(value))
        return out
    if isinstance(value, list | tuple | set | frozenset):
        out_list = []
        for item in islice(value, MAX_ITEMS):
            if budget.left < 0:
                break
            out_list.append(_clean(item, depth - 1, budget))
        if len(value) > MAX_ITEMS:
            out_list.append(_more(len(value)))
        return out_list
    text = _repr(value)
    budget.take(len(text))
    return text


def bounded_json(value: Any, max_chars: int = MAX_CHARS) -> Any:
    """Return ``value`` as JSON-safe data that dumps to at most ``max_chars`` characters.

    Non-JSON values become their ``repr``, NaN/Infinity and integers over 64 bits become
    strings, nesting is cut at MAX_DEPTH, and containers at MAX_ITEMS entries (a last entry, or
    a ``"..."`` key, then says how many more there were). A value still too big becomes
    ``{"truncated": true, "size": n, "preview": "<start of its JSON>"}``, where ``size`` is the
    length of the JSON text cleaned before giving up (a lower bound).
    """
    budget = _Budget(2 * max_chars)
    clean = _clean(value, MAX_DEPTH, budget)
    text = json.dumps(clean, allow_nan=False)
    if budget.left >= 0 and len(text) <= max_chars:
        return clean
    # The preview is JSON text (ASCII), so dumping it at most doubles it (escaped quotes).
    return {"truncated": True, "size": len(text), "preview": text[: max(0, max_chars // 2 - 40)]}


def bounded_text(value: Any, max_chars: int = MAX_CHARS) -> str | None:
    """``value`` as a string of at most ``max_chars`` characters (None stays None); never raises."""
    return None if value is None else _text(value, max_chars)
