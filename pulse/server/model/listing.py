"""Listing and counting tasks from the registry's indexes, kept in Redis at write time.

No request scans the keyspace: a page walks the smallest matching index, newest first, and
checks the other filters (and a search's substring) on each entry, with a cursor that stays stable
however many records arrive meanwhile. Redis is also the broker, and a Lua script holds it whole,
so the work is bounded: an index entry walked counts 1 and a record read (one per entry at most,
however many filters and names) ``READ_COST`` more; a script call does at most ``CALL_CAP`` of it
and a request ``SCAN_CAP``, then answers what it found and a cursor to go on.
"""

import base64
import math
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pulse.record.registry import Registry, as_text
from pulse.record.scripts import script
from pulse.record.statuses import STATUSES

MAX_LIMIT = 500
FULL_LIMIT = 100    # pages of more tasks carry summaries (no progress history, links or flags)
# The work of one request: 10,000 index entries walked, or 2,000 whose records are read (bench/api.py:
# about 15 ms of Redis at 100,000 records at worst, on a busy 2-core machine).
SCAN_CAP = 10_000
CALL_CAP = 2_000    # of it, per script call (about 3 ms): the broker's clients get Redis in between
READ_COST = 4       # a record read (HMGET) costs about 4-6 times an index entry walked


class ListingError(ValueError):
    """A filter or cursor is malformed; the message says which and how."""


@dataclass
class Page:
    ids: list[str]
    next_cursor: str | None


def parse_time(raw: str, name: str) -> float:
    """Unix seconds or ISO 8601."""
    try:
        value = float(raw)
    except ValueError:
        try:
            value = datetime.fromisoformat(raw).timestamp()
        except ValueError:
            value = math.nan
    if not math.isfinite(value):
        raise ListingError(f"{name}={raw[:50]!r} is not a time: use Unix seconds or ISO 8601")
    return value


def encode_cursor(score: str, task_id: str) -> str:
    return base64.urlsafe_b64encode(f"{score}|{task_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        score, task_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split("|", 1)
        if not math.isfinite(float(score)):
            raise ValueError(score)
    except (ValueError, UnicodeDecodeError):
        raise ListingError("malformed cursor: pass back the next_cursor of the previous page") from None
    return score, task_id


class Listing:
    """Queries over the registry's indexes."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.client = registry.client
        self._script = self.client.register_script(script("list.lua"))

    def index(self, field: str, value: str) -> str:
        return self.registry.keys.index(field, value)

    def counts(self) -> dict[str, int]:
        """How many records per status, and in all."""
        pipe = self.client.pipeline(transaction=False)
        for status in STATUSES:
            pipe.zcard(self.index("status", status))
        pipe.zcard(self.registry.keys.all)
        *per_status, total = pipe.execute()
        return {"total": total, "by_status": dict(zip(STATUSES, per_status, strict=True))}

    def page(self, filters: dict[str, Any], limit: int = 50, cursor: str | None = None,
             order: str = "desc") -> Page:
        """One page of ids matching ``filters`` (status, state, name, worker, q, since, until),
        by the time each task was first recorded: newest first (``desc``) or oldest first."""
        if not 1 <= limit <= MAX_LIMIT:
            raise ListingError(f"limit must be 1-{MAX_LIMIT}")
        if order not in ("asc", "desc"):
            raise ListingError("order must be asc or desc")
        groups = self._groups(filters)
        q = filters.get("q") or ""
        names = self._names_containing(q) if q else []
        cscore, cid = decode_cursor(cursor) if cursor else ("", "")
        maxs = str(filters["until"]) if filters.get("until") is not None else "+inf"
        mins = str(filters["since"]) if filters.get("since") is not None else "-inf"
        keys = [self.registry.keys.all, self.registry.keys.temporary(uuid.uuid4().hex),
                *(key for _field, group in groups for key in group.values())]
        shape: list[Any] = [len(groups)]
        for field, group in groups:
            shape += [field, len(group), *group]
        shape += [len(names), *names]
        ids: list[str] = []
        spent = 0
        # Several short calls rather than one long one: the broker's clients get Redis in between.
        while True:
            rows, resume_score, resume_id, work = self._script(keys=keys, args=[
                maxs, mins, cscore, cid, limit - len(ids), min(CALL_CAP, SCAN_CAP - spent), READ_COST,
                order, q, self.registry.keys.task(""), *shape])
            ids += [as_text(rows[i]) for i in range(0, len(rows), 2)]
            spent += int(work)
            if not resume_score:  # the page is full, or the index walked to its end
                break
            cscore, cid = as_text(resume_score), as_text(resume_id)
            if spent >= SCAN_CAP:
                return Page(ids, encode_cursor(cscore, cid))
        if len(ids) == limit:
            return Page(ids, encode_cursor(as_text(rows[-1]), ids[-1]))
        return Page(ids, None)

    def _groups(self, filters: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
        """The filters as groups, each a record field and its index key per accepted value: a task
        must be in one key of every group (that is, its field holds one of the values)."""
        groups = [(field, {filters[field]: self.index(field, filters[field])})
                  for field in ("state", "name", "worker") if filters.get(field)]
        statuses = filters.get("status") or []
        unknown = [s for s in statuses if s not in STATUSES]
        if unknown:
            raise ListingError(f"unknown status {unknown[0][:30]!r}: use one of {', '.join(STATUSES)}")
        if statuses:
            groups.append(("status", {s: self.index("status", s) for s in statuses}))
        return groups

    def _names_containing(self, q: str) -> list[str]:
        """The task names containing ``q``, case-insensitively.

        Ids are matched as typed inside the walk, one entry at a time: a search costs what the
        page walks, not a pass over every id (a sparse match answers with a resume cursor). A
        walked entry's name is read from its record once, whatever the number of names.
        """
        needle = q.lower()
        names = (as_text(n) for n in self.client.smembers(self.registry.keys.names))
        return [name for name in names if needle in name.lower()]
