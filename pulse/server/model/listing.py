"""Listing and counting tasks from the registry's indexes, kept in Redis at write time.

No request scans the keyspace: a page walks the smallest matching index, newest first, and
checks the other filters (and a search's parts, terms.py) on each entry, with a cursor that stays stable
however many records arrive meanwhile. Redis is also the broker, and a Lua script holds it whole,
so the work is bounded: an index entry walked counts 1 and a record read (one per entry at most,
however many filters and names) ``READ_COST`` more; a script call does at most ``CALL_CAP`` of it
and a request ``SCAN_CAP``, then answers what it found and a cursor to go on.
"""

import base64
import math
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pulse.record.registry import Registry, as_text
from pulse.record.scripts import script
from pulse.record.statuses import STATUSES
from pulse.record.terms import SearchError, parse
from pulse.server.model.inbox import GroupIdError, group_member

MAX_LIMIT = 500
TEXT_FILTERS = ("state", "name", "worker", "queue", "exc_type", "failure_group", "q")
FILTER_LIMIT = 1000  # characters of a text filter: names and hostnames are far shorter
FULL_LIMIT = 100    # pages of more tasks carry summaries (no progress history, links or flags)
# The work of one request: 10,000 index entries walked, or 2,000 whose records are read (bench/api.py:
# about 15 ms of Redis at 100,000 records at worst, on a busy 2-core machine).
SCAN_CAP = 10_000
CALL_CAP = 2_000    # of it, per script call (about 3 ms): the broker's clients get Redis in between
READ_COST = 4       # a record read (HMGET) costs about 4-6 times an index entry walked


class ListingError(ValueError):
    """A filter or cursor is malformed; the message says which and how."""


# A filter group, as list.lua takes it: a task is in it when its id contains ``idsub``, or its
# record's ``field`` is one of ``values`` (value -> index key), or it is in one of ``indexes``
# (checked by membership: search terms, a failure group).
@dataclass
class Group:
    field: str = ""
    idsub: str = ""
    values: dict[str, str] | None = None
    indexes: list[str] | None = None

    def keys(self) -> list[str]:
        return [*(self.values or {}).values(), *(self.indexes or [])]

    def shape(self) -> list[Any]:
        values = self.values or {}
        return [self.field, self.idsub, len(values), *values, len(self.indexes or [])]


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


FILTER_KEYS = (*TEXT_FILTERS, "status", "since", "until")


def parse_filters(source: Mapping[str, Any], strict: bool = False) -> dict[str, Any]:
    """The list filters in ``source`` (a query string, or a JSON object of the same keys):
    ``status`` a comma list, ``since``/``until`` times, the others text. ``strict``: a key that is
    no filter is an error (a misspelt filter must not widen a bulk action to every task)."""
    if strict:
        unknown = sorted(key for key in source if key not in FILTER_KEYS)
        if unknown:
            raise ListingError(f"unknown filter {unknown[0][:50]!r}: use {', '.join(FILTER_KEYS)}")
    filters: dict[str, Any] = {}
    for key in TEXT_FILTERS:
        value = source.get(key)
        if value is not None and not isinstance(value, str):
            raise ListingError(f"{key} must be text")
        if value is not None and len(value) > FILTER_LIMIT:
            raise ListingError(f"{key} is at most {FILTER_LIMIT} characters")
        filters[key] = value or None
    status = source.get("status") or ""
    if not isinstance(status, str):
        raise ListingError("status must be text: a comma list of statuses")
    filters["status"] = [s for s in status.split(",") if s]
    for key in ("since", "until"):
        value = source.get(key)
        if value is not None and not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ListingError(f"{key} must be Unix seconds or ISO 8601")
        filters[key] = parse_time(str(value), key) if value not in (None, "") else None
    return filters


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
        """One page of ids matching ``filters`` (``parse_filters``: status, state, name, worker,
        queue, exc_type, q, since, until),
        by the time each task was first recorded: newest first (``desc``) or oldest first."""
        if not 1 <= limit <= MAX_LIMIT:
            raise ListingError(f"limit must be 1-{MAX_LIMIT}")
        if order not in ("asc", "desc"):
            raise ListingError("order must be asc or desc")
        groups = self._groups(filters)
        cscore, cid = decode_cursor(cursor) if cursor else ("", "")
        maxs = str(filters["until"]) if filters.get("until") is not None else "+inf"
        mins = str(filters["since"]) if filters.get("since") is not None else "-inf"
        keys = [self.registry.keys.all, self.registry.keys.temporary(uuid.uuid4().hex),
                *(key for group in groups for key in group.keys())]
        shape: list[Any] = [len(groups)]
        for group in groups:
            shape += group.shape()
        ids: list[str] = []
        spent = 0
        # Several short calls rather than one long one: the broker's clients get Redis in between.
        while True:
            rows, resume_score, resume_id, work = self._script(keys=keys, args=[
                maxs, mins, cscore, cid, limit - len(ids), min(CALL_CAP, SCAN_CAP - spent), READ_COST,
                order, self.registry.keys.task(""), *shape])
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

    def pages(self, filters: dict[str, Any], limit: int, order: str = "desc",
              first: Page | None = None) -> Iterator[Page]:
        """Every page of ``filters``, following the cursors to the end (``first``: the first
        page, already read, so that a bad filter raised before the walk began)."""
        page = first or self.page(filters, limit, None, order)
        while True:
            yield page
            if page.next_cursor is None:
                return
            page = self.page(filters, limit, page.next_cursor, order)

    def _groups(self, filters: dict[str, Any]) -> list[Group]:
        """The filters as groups: a task must be in every one."""
        groups = [Group(field, values={filters[field]: self.index(field, filters[field])})
                  for field in ("state", "name", "worker", "queue", "exc_type") if filters.get(field)]
        statuses = filters.get("status") or []
        unknown = [s for s in statuses if s not in STATUSES]
        if unknown:
            raise ListingError(f"unknown status {unknown[0][:30]!r}: use one of {', '.join(STATUSES)}")
        if statuses:
            groups.append(Group("status", values={s: self.index("status", s) for s in statuses}))
        if filters.get("failure_group"):
            try:
                member = group_member(filters["failure_group"])
            except GroupIdError as exc:
                raise ListingError(str(exc)) from None
            groups.append(Group(indexes=[self.index("failgroup", member)]))
        return groups + self._search_groups(filters.get("q") or "")

    def _search_groups(self, q: str) -> list[Group]:
        """The groups of a search (terms.py): a term is an index lookup; a free word matches the
        id as typed, the names that contain it (case-insensitively), or the word as a term.

        Ids are matched inside the walk, one entry at a time: a search for part of an id costs
        what the page walks, not a pass over every id (a sparse match answers with a resume
        cursor); a word that cannot be part of any recorded id is not walked for. Qualified parts
        (``kwargs:``, ``exc:``...) are index lookups: the smallest drives the walk, so a rare
        value is found at once among any number of records.
        """
        try:
            search = parse(q)
        except SearchError as exc:
            raise ListingError(str(exc)) from None
        if not (search.terms or search.names or search.ids or search.free):
            return []
        known: list[str] = []
        id_chars: set[str] | None = None
        if search.names or search.free:  # one round trip for both
            pipe = self.client.pipeline(transaction=False)
            pipe.smembers(self.registry.keys.names)
            pipe.smembers(self.registry.keys.id_chars)
            names_read, chars_read = pipe.execute()
            known = [as_text(n) for n in names_read]
            # The characters of every id recorded (write.lua keeps them); None when not kept (a
            # registry written before they were: then any text may be part of an id).
            id_chars = {as_text(c) for c in chars_read} or None

        def names(part: str) -> dict[str, str]:
            needle = part.lower()
            return {name: self.index("name", name) for name in known if needle in name.lower()}

        groups = [Group(indexes=[self.index("term", term)]) for term in search.terms]
        groups += [Group("name", values=names(part)) for part in search.names]
        groups += [Group(idsub=part) for part in search.ids]
        # A free word with a character that no id has cannot be part of an id: its group is then
        # index lookups alone (names, its term), and the smallest index drives the walk.
        groups += [Group("name", idsub=typed if id_chars is None or set(typed) <= id_chars else "",
                         values=names(typed), indexes=[self.index("term", term)])
                   for typed, term in search.free]
        return groups

