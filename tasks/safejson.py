"""Turn anything a task hands us into bounded, JSON-safe data.

Task authors put arbitrary objects in progress messages, failure details and results; what
Pulse stores and pushes must stay valid JSON of a bounded size whatever they pass.
"""

import json
import math
from typing import Any

MAX_CHARS = 16_384
MAX_DEPTH = 12
MAX_ITEMS = 500


def _clean(value: Any, depth: int) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value[:MAX_CHARS]
    if depth <= 0:
        return "..."
    if isinstance(value, dict):
        items = list(value.items())[:MAX_ITEMS]
        return {str(key)[:200]: _clean(item, depth - 1) for key, item in items}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(item, depth - 1) for item in list(value)[:MAX_ITEMS]]
    return repr(value)[:MAX_CHARS]


def bounded_json(value: Any, max_chars: int = MAX_CHARS) -> Any:
    """Return ``value`` as JSON-safe data; when it dumps to over ``max_chars``, a truncated preview.

    Non-JSON values become their ``repr``, NaN/Infinity become strings, nesting is cut at
    MAX_DEPTH and containers at MAX_ITEMS entries.
    """
    clean = _clean(value, MAX_DEPTH)
    text = json.dumps(clean, allow_nan=False)
    if len(text) <= max_chars:
        return clean
    return {"truncated": True, "size": len(text), "preview": text[: max_chars // 2]}


def bounded_text(value: Any, max_chars: int = MAX_CHARS) -> str | None:
    """``value`` as a string of at most ``max_chars`` characters (None stays None)."""
    return None if value is None else str(value)[:max_chars]
