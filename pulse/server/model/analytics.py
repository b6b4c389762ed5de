"""Runtime analytics per task name, read from the buckets the registry's write script keeps.

A window is whole minutes ending with the current one, read from hour hashes where a whole hour fits
and from minute hashes for the rest (at most 83 hashes for a day, in one round trip).
Percentiles are estimated from the buckets, interpolating within one as Prometheus's
``histogram_quantile`` does, so this page and a Grafana panel over ``/metrics`` agree.
"""

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from pulse.record.analytics import (
    BOUNDS,
    DAY,
    LABEL_LIMIT,
    NAME_CAP,
    OTHER,
    OUTCOME,
    QUEUE_CAP,
    RUNTIME,
    RUNTIME_SUM,
    SEPARATOR,
    UNKNOWN,
    WAIT,
    WAIT_SUM,
    outcome_field,
    split_field,
)
from pulse.record.registry import Registry, as_text
from pulse.record.statuses import FAILED, FINISHED, OUTCOMES

QUANTILES = (0.5, 0.9, 0.99)
WINDOWS = (3600, 86400)  # the windows the page and the API offer: the last hour, the last day
BUCKETS = len(BOUNDS) + 1  # the last one is above every bound (Prometheus's le="+Inf")
CAPS = {"names": NAME_CAP, "queues": QUEUE_CAP}


def quantile(q: float, counts: list[int]) -> float | None:
    """The ``q`` quantile of the values counted in ``counts`` (one per bucket, not cumulative),
    estimated as Prometheus's ``histogram_quantile`` does: linearly within the bucket it falls in,
    from 0 for the first; in the last (above every bound), the highest bound. None: no value."""
    total = sum(counts)
    if total == 0:
        return None
    rank, below = q * total, 0
    for index, count in enumerate(counts):
        if count and below + count >= rank:
            if index >= len(BOUNDS):
                return BOUNDS[-1]
            lower = BOUNDS[index - 1] if index else 0.0
            return lower + (BOUNDS[index] - lower) * (rank - below) / count
        below += count
    return BOUNDS[-1]


def cover(window_seconds: float, now: float) -> tuple[list[int], list[int]]:
    """The hours and the minutes whose buckets together hold exactly the last ``window_seconds``
    (rounded up to whole minutes, the current one included): the hours wholly inside the window,
    and the minutes before and after them (a writer whose clock runs ahead may already have written
    to a later minute of the current hour: that is not read)."""
    last = int(now // 60)
    first = last - max(1, math.ceil(window_seconds / 60)) + 1
    first_hour, end_hour = -(-first // 60), (last + 1) // 60  # hours [first_hour, end_hour) fit
    if first_hour >= end_hour:
        return [], list(range(first, last + 1))
    hours = list(range(first_hour, end_hour))
    minutes = list(range(first, first_hour * 60)) + list(range(end_hour * 60, last + 1))
    return hours, minutes


@dataclass
class Figures:
    """What a window (or the totals) holds for one name (or name and queue)."""

    outcomes: dict[str, int] = field(default_factory=dict)
    runtime: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    wait: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    runtime_sum: float = 0.0
    wait_sum: float = 0.0

    def add(self, kind: str, what: str, value: str) -> None:
        if kind == OUTCOME:
            self.outcomes[what] = self.outcomes.get(what, 0) + int(value)
        elif kind in (RUNTIME, WAIT) and what.isdigit() and 1 <= int(what) <= BUCKETS:
            (self.runtime if kind == RUNTIME else self.wait)[int(what) - 1] += int(value)
        elif kind == RUNTIME_SUM:
            self.runtime_sum += float(value)
        elif kind == WAIT_SUM:
            self.wait_sum += float(value)


def _distribution(counts: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {"count": sum(counts)}
    for q in QUANTILES:
        value = quantile(q, counts)
        out[f"p{round(q * 100)}"] = None if value is None else round(value, 6)
    out["buckets"] = counts
    return out


def row(name: str, figures: Figures) -> dict[str, Any]:
    """One name's line of ``Analytics.summary``."""
    outcomes = {status: figures.outcomes.get(status, 0) for status in OUTCOMES}
    succeeded, failed = outcomes[FINISHED], outcomes[FAILED]
    return {
        "name": name, "count": sum(outcomes.values()), "succeeded": succeeded, "failed": failed,
        # Of the tasks that ran to an end: revoked, lost and abandoned ones are counted apart.
        "failure_rate": round(failed / (succeeded + failed), 6) if succeeded + failed else None,
        "outcomes": outcomes, "runtime": _distribution(figures.runtime),
        "queue_wait": _distribution(figures.wait),
    }


class Analytics:
    """Reads the analytics of ``registry``: windows of the last day per name, and the totals."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def _keys(self, window_seconds: float, now: float | None) -> list[str]:
        if not 0 < window_seconds <= DAY:
            raise ValueError(f"window_seconds must be above 0 and at most {DAY} (a day of minutes is "
                             f"kept), not {window_seconds!r}")
        hours, minutes = cover(window_seconds, time.time() if now is None else now)
        keys = self.registry.keys
        return [keys.analytics_hour(hour) for hour in hours] + [keys.analytics_minute(m) for m in minutes]

    def summary(self, window_seconds: float, now: float | None = None) -> list[dict[str, Any]]:
        """Per name, the tasks that ended in the last ``window_seconds`` (at most a day): counts by
        outcome, failure rate, runtime and queue wait percentiles; busiest first."""
        pipe = self.registry.client.pipeline(transaction=False)
        for key in self._keys(window_seconds, now):
            pipe.hgetall(key)
        names: dict[str, Figures] = defaultdict(Figures)
        for fields in pipe.execute():
            for raw, value in fields.items():
                kind, what, name = split_field(as_text(raw))
                names[name].add(kind, what, as_text(value))
        rows = [row(name, figures) for name, figures in names.items()]
        return sorted(rows, key=lambda r: (-r["count"], r["name"]))

    def outcomes(self, name: str | None, window_seconds: float, now: float | None = None,
                 statuses: tuple[str, ...] = OUTCOMES) -> dict[str, int]:
        """How many tasks of ``name`` (None: of every name) ended in each of ``statuses`` in the last
        ``window_seconds`` (whole minutes, at most a day), in one round trip. A name past the cap
        counts as "other" (``label``)."""
        if name is None:  # every name counted apart, "other" and "unknown": at most 202
            kept = [as_text(n) for n in self.registry.client.smembers(self.registry.keys.analytics_names)]
            names = [*kept, OTHER, UNKNOWN]
        else:
            names = [name]
        pairs = [(status, each) for each in names for status in statuses]
        fields = [outcome_field(status, each) for status, each in pairs]
        pipe = self.registry.client.pipeline(transaction=False)
        for key in self._keys(window_seconds, now):
            pipe.hmget(key, fields)
        counts = dict.fromkeys(statuses, 0)
        for values in pipe.execute():
            for (status, _), value in zip(pairs, values, strict=True):
                counts[status] += int(value or 0)
        return counts

    def label(self, name: str | None) -> str:
        """The name the analytics count ``name``'s tasks under: itself while it fits and is kept (or
        would be, at its first end), "other" past the cap, "unknown" for none."""
        if not name:
            return UNKNOWN
        if len(name.encode()) > LABEL_LIMIT or SEPARATOR in name:
            return OTHER
        pipe = self.registry.client.pipeline(transaction=False)
        pipe.sismember(self.registry.keys.analytics_names, name)
        pipe.scard(self.registry.keys.analytics_names)
        kept, size = pipe.execute()
        return name if kept or (size < NAME_CAP and name not in (OTHER, UNKNOWN)) else OTHER

    def totals(self) -> dict[tuple[str, str], Figures]:
        """Everything since the analytics began, per (name, queue): what /metrics exports."""
        out: dict[tuple[str, str], Figures] = defaultdict(Figures)
        for raw, value in self.registry.client.hgetall(self.registry.keys.analytics_totals).items():
            kind, what, rest = split_field(as_text(raw))
            queue, _, name = rest.partition(SEPARATOR)
            out[(name, queue)].add(kind, what, as_text(value))
        return dict(out)

