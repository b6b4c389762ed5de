"""The overview: counts, throughput per minute, failure rate, queues and what needs attention.

Throughput comes from per-minute buckets the registry's write script keeps (so a reload or a
restarted server keeps the last hour). Queue depth is read from the Redis broker's lists;
which workers consume which queue comes from the workers themselves (``inspect``), refreshed in
the background by the registry upkeep.
"""

import json
import math
import time
from collections.abc import Callable
from typing import Any

import redis

from pulse.record.registry import Registry, as_text
from pulse.server.model.listing import Listing

MINUTES = 60
# kombu's Redis transport keeps a list per priority step: "<queue>", "<queue>\x06\x163", ...
PRIORITY_KEYS = ("", "\x06\x163", "\x06\x166", "\x06\x169")


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


def queue_names(registry: Registry, default: str, consumers: dict[str, list[str]] | None) -> list[str]:
    known = {as_text(q) for q in registry.client.smembers(registry.keys.queues)}
    return sorted(known | {default} | set(consumers or {}))


def queues(broker: redis.Redis | None, registry: Registry, names: list[str], now: float,
           consumers: dict[str, list[str]] | None,
           depths: Callable[[list[str]], dict[str, tuple[int, int]]] | None = None) -> list[dict[str, Any]]:
    """Depth and age of the oldest waiting message of each queue, with its consumers. Without a
    Redis broker the depth comes from ``depths`` (RabbitMQ's passive declare), and the age of the
    oldest message stays unknown: AMQP cannot look at a message without taking it."""
    if broker is None:
        known = depths(names) if depths is not None else {}
        return [{"name": name, "depth": known[name][0] if name in known else None, "oldest_age": None,
                 "consumers": None if consumers is None else sorted(consumers.get(name, []))}
                for name in names]
    pipe = broker.pipeline(transaction=False)
    for name in names:
        for suffix in PRIORITY_KEYS:
            pipe.llen(name + suffix)
        pipe.lindex(name, -1)  # kombu pushes on the left: the oldest message is on the right
    replies = pipe.execute()
    out = []
    step = len(PRIORITY_KEYS) + 1
    for index, name in enumerate(names):
        lengths, oldest = replies[index * step: index * step + step - 1], replies[index * step + step - 1]
        out.append({
            "name": name,
            "depth": sum(int(n) for n in lengths),
            "oldest_age": _age(registry, oldest, now),
            "consumers": None if consumers is None else sorted(consumers.get(name, [])),
        })
    return out


def _age(registry: Registry, raw: Any, now: float) -> float | None:
    """How long the oldest waiting message has waited, from its task's registry record."""
    if raw is None:
        return None
    try:
        task_id = json.loads(raw)["headers"]["id"]
    except (ValueError, KeyError, TypeError):
        return None
    sent = registry.client.hget(registry.key(task_id), "sent_at")
    return round(now - float(sent), 1) if sent else None


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
