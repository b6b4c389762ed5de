"""Exporting a filtered task list as CSV or NDJSON, streamed a page at a time.

The list is walked with the listing's own cursor, one page of ``PAGE`` tasks at a time, and each
page is written out before the next is read: however many tasks match, the server holds one
page. NDJSON carries every field of the task JSON; CSV the scalar fields, nested values as JSON,
and no cell that a spreadsheet would run as a formula.
"""

import csv
import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

from redis import RedisError

from pulse.server.model.listing import MAX_LIMIT, Listing
from pulse.server.model.store import TaskStore

log = logging.getLogger(__name__)

PAGE = MAX_LIMIT
COLUMNS = ("id", "name", "status", "state", "queue", "worker", "args", "kwargs", "result",
           "progress_percent", "progress_message", "exc_type", "exc_message", "retries", "created_at",
           "sent_at", "received_at", "started_at", "finished_at", "runtime", "updated_at", "parent_id",
           "root_id", "group_id", "goal", "replay_of", "replayed_by", "revoke_requested_at",
           "lost_reason", "periodic_entry")
# A cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def tasks(listing: Listing, store: TaskStore, filters: dict[str, Any],
          order: str) -> Iterator[dict[str, Any]]:
    """Every task the filters select, in ``order``, a page at a time. The first page is read
    now, so a bad filter raises ListingError here rather than half way through a download."""
    pages = listing.pages(filters, PAGE, order, first=listing.page(filters, PAGE, None, order))
    return (task for page in pages for task in store.many_json(page.ids))


def ndjson(rows: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    """One task JSON per line."""
    for row in rows:
        yield (json.dumps(row, separators=(",", ":"), default=str) + "\n").encode()


def csv_rows(rows: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    """A header, then one line per task (the columns in ``COLUMNS``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> bytes:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text.encode()

    writer.writerow(COLUMNS)
    yield flush()
    for row in rows:
        writer.writerow([_cell(value) for value in _flat(row)])
        yield flush()


def guarded(chunks: Iterator[bytes], trailer: Callable[[str], bytes]) -> Iterator[bytes]:
    """``chunks``, ending with ``trailer(reason)`` if Redis fails half way: the status line has
    gone out already, so the body itself must say that the export stopped short."""
    try:
        yield from chunks
    except RedisError as exc:
        log.warning("pulse: an export stopped, Redis is unreachable: %r", exc)
        yield trailer(f"export stopped: Redis is unreachable ({type(exc).__name__}); export again")


def _flat(task: dict[str, Any]) -> list[Any]:
    progress = task.get("progress") or {}
    failure = task.get("failure") or {}
    values = {**task, "progress_percent": progress.get("percent"),
              "progress_message": progress.get("message"),
              "exc_type": failure.get("exc_type"), "exc_message": failure.get("exc_message")}
    return [values.get(column) for column in COLUMNS]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)  # a number, never a formula (-1 included)
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    # A leading quote makes spreadsheets show the text rather than run it (OWASP's advice).
    return "'" + text if text.startswith(FORMULA_START) else text
