"""The overview: counts, throughput per minute, failure rate, queues and what needs attention.

Throughput comes from per-minute buckets the registry's write script keeps (so a reload or a
restarted server keeps the last hour). Queue depth is read from the Redis broker's lists
(``queues.py``, which the queues page shares);
which workers consume which queue comes from the workers themselves (``inspect``), refreshed in
the background by the registry upkeep.
"""

import math
import time
from collections.abc import Callable
from typing import Any

import redis

from pulse.record.registry import Registry
from pulse.server.model.listing import Listing
from pulse.server.model.queues import queue_names, queues

MINUTES = 60


def throughput(registry: Registry, now: float, minutes: int = MINUTES) -> list[dict[str, Any]]:
    """Finished and failed tasks per minute, oldest first, the current minute last."""
    last = math.floor(now / 60)
    pipe = registry.client.pipeline(transaction=False)
    for minute in range(last - minutes + 1, last + 1):
        pipe.hmget(registry.keys.throughput(minute), "finished", "failed")
    rows = []
    for offset, (finished, failed) in enumerate(pipe.execute()):
        rows.append({"minute": (last - minutes + 1 + offset) * 60,
                     "finished": int(finished or 0), "failed": int(failed or 0)})
    return rows


def warnings(queue_rows: list[dict[str, Any]], workers_online: int) -> list[dict[str, Any]]:
    out = []
    if workers_online == 0:
        out.append({"kind": "no_workers", "queue": None,
                    "message": "No worker is online: nothing will run until one starts."})
    for row in queue_rows:
        if row["depth"] and row["consumers"] == [] and workers_online:
            out.append({"kind": "queue_unconsumed", "queue": row["name"],
                        "message": f"Queue {row['name']} has {row['depth']} waiting task(s) and no worker "
                                   "consumes it."})
    return out


def overview(listing: Listing, broker: redis.Redis | None, default_queue: str, workers_online: int,
             consumers: dict[str, list[str]] | None, connected: bool,
             depths: Callable[[list[str]], dict[str, tuple[int, int]]] | None = None) -> dict[str, Any]:
    """Everything the overview page shows, in one answer."""
    now = time.time()
    registry = listing.registry
    rows = throughput(registry, now)
    finished = sum(r["finished"] for r in rows)
    failed = sum(r["failed"] for r in rows)
    queue_rows = queues(broker, registry, queue_names(registry, default_queue, consumers), now, consumers,
                        depths)
    return {
        "counts": listing.counts(),
        "throughput": rows,
        "failure_rate": round(failed / (finished + failed), 4) if finished + failed else None,
        "queues": queue_rows,
        "workers": {"online": workers_online},
        "warnings": warnings(queue_rows, workers_online),
        "monitor": {"connected": connected},
        "at": now,
    }
