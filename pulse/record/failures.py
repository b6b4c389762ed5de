"""A failure as the registry keeps it and the API shows it: built here, for every path.

``fail()`` in a task, the worker's failure signal, the result backend's FAILURE meta and
Celery's ``task-failed`` event all become the same bounded shape.
"""

from collections.abc import Iterable
from typing import Any

from pulse.record.safejson import MAX_KEY, bounded_json, bounded_text

TYPE_LIMIT = 200
MESSAGE_PARTS = 20  # of an exception's args, joined into its message
# All of a failure's custom details together (each one is bounded to safejson.MAX_CHARS too);
# more becomes a truncated preview.
DETAILS_LIMIT = 65_536
# Keys of a FAILURE meta that Celery itself reads; custom details may not reuse them.
FAILURE_KEYS = frozenset({"exc_type", "exc_message", "exc_module", "exc_cls"})


def failure_json(exc_type: Any, message: Any, traceback: Any, details: Any = None,
                 exposed: Iterable[str] | None = None) -> dict[str, Any]:
    """The failure as Pulse records and shows it, bounded; a list message (Celery's exception
    args) is joined. ``exposed`` names the details a per-task token may see."""
    if isinstance(message, list | tuple):
        message = ", ".join(str(bounded_text(part)) for part in message[:MESSAGE_PARTS])
    out = {
        "exc_type": bounded_text(exc_type, TYPE_LIMIT),
        "exc_message": bounded_text(message),
        "traceback": bounded_text(traceback),
        "details": bounded_json(details or {}, DETAILS_LIMIT),
    }
    if exposed is not None:
        # Detail names were cut to MAX_KEY characters with the details: cut the exposed ones alike.
        cut = (bounded_text(name, MAX_KEY) for name in exposed)
        out["exposed"] = [name for name in cut if name in out["details"]]
    return out


def failure_of_meta(stored: Any, traceback: Any) -> dict[str, Any]:
    """The failure JSON from a FAILURE meta, custom details separated from Celery's keys."""
    stored = stored if isinstance(stored, dict) else {}
    details = {k: v for k, v in stored.items() if k not in FAILURE_KEYS}
    return failure_json(stored.get("exc_type"), stored.get("exc_message", ""), traceback, details)


def failure_of_event(event: dict[str, Any]) -> dict[str, Any]:
    """The failure JSON from a ``task-failed`` event (Celery's, or ``fail``'s with details)."""
    exception = str(event.get("exception") or "")
    return failure_json(event.get("exc_type") or exception.partition("(")[0] or None,
                        event.get("exc_message", exception), event.get("traceback"), event.get("details"))


