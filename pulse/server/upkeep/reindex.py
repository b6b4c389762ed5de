"""Indexing the records written before the indexes existed, once, after an upgrade.

Search terms, the queue and exception type indexes, the failure inbox's groups and the set of id
characters (issue 15) are kept where records are written. Records already in Redis got none of
them: one server at a time (under a lease) rewrites their searched fields through the registry's
write script, a batch at a time, oldest first, with the record's own ``updated_at`` as the
write's time, so nothing but the indexes changes (no record looks fresher, none moves in the
retention). Records made by this version carry the field ``indexed`` (``lua/write.lua``); they
come after the older ones in the walk (by creation), so the first one met ends it: a registry
this version started pays nothing. The position is kept in Redis, so a restarted server goes on
where it stood; the done mark stops every server for good.
"""

from typing import Any

from pulse.record.registry import Registry, as_text, decode
from pulse.server.upkeep.periodic import Periodic

VERSION = "15"  # the issue that added these indexes
BATCH = 200  # with the interval: 400 records a second, gently beside the API (Redis is the broker)
LEASE = 30
FIELDS = ("args", "kwargs", "call", "result", "failure", "queue", "updated_at", "indexed")


class Reindex(Periodic):
    """Index older records a batch per step until every one is; then stop."""

    failure = "indexing older records failed"

    def __init__(self, registry: Registry, owner: str, interval: float = 0.5) -> None:
        self.registry = registry
        self.owner = owner
        self.interval = interval
        self.done_key, self.position_key, self.lease_key = (registry.keys.reindex(part)
                                                            for part in ("done", "position", "lease"))

    def step(self) -> int:
        """Index one batch; returns how many records it indexed."""
        client = self.registry.client
        if as_text(client.get(self.done_key) or b"") == VERSION:
            self.stop()
            return 0
        if not client.set(self.lease_key, self.owner, nx=True, ex=LEASE) \
                and as_text(client.get(self.lease_key) or b"") != self.owner:
            return 0  # another server is on it
        client.expire(self.lease_key, LEASE)
        score, seen = self._position()
        ids_scores = client.zrangebyscore(self.registry.keys.all, score, "+inf", start=seen, num=BATCH,
                                          withscores=True)
        if not ids_scores:
            self._done()
            return 0
        ids = [as_text(task_id) for task_id, _score in ids_scores]
        if self._index(ids) < len(ids):  # met a record made by this version: the rest are too
            self._done()
            return len(ids)
        last = ids_scores[-1][1]
        # Ties: the records at the last score already indexed, skipped from there next time.
        ties = sum(1 for _id, s in ids_scores if s == last) + (seen if last == score else 0)
        client.set(self.position_key, f"{last!r} {ties}")
        return len(ids)

    def _done(self) -> None:
        """Every older record is indexed: mark it for every server, and stop."""
        client = self.registry.client
        client.set(self.done_key, VERSION)
        client.delete(self.position_key, self.lease_key)
        self.stop()

    def _position(self) -> tuple[float | str, int]:
        raw = self.registry.client.get(self.position_key)
        if raw is None:
            return "-inf", 0
        score, seen = as_text(raw).split()
        return float(score), int(seen)

    def _index(self, ids: list[str]) -> int:
        """Index the records of ``ids`` up to the first one made by this version; how many were
        looked at before it (all of them when there is none)."""
        client, registry = self.registry.client, self.registry
        pipe = client.pipeline(transaction=False)
        for task_id in ids:
            pipe.hmget(registry.keys.task(task_id), *FIELDS)
        chars = sorted({char for task_id in ids for char in task_id})
        writes = registry.pipeline()
        looked = 0
        for task_id, values in zip(ids, pipe.execute(), strict=True):
            record: dict[str, Any] = decode({field: as_text(value) for field, value in zip(FIELDS, values,
                                                                                            strict=True)
                                             if value is not None})
            if record.pop("indexed", None) is not None:
                break
            looked += 1
            updated_at = record.pop("updated_at", None)
            if updated_at is None:
                continue  # pruned meanwhile
            # The same values again, indexed as if new (write.lua): terms, queue, exception type,
            # failure group. As fill: a change written since the read above is never undone.
            registry.write(task_id, fields={"reindex": True}, fill=record, now=updated_at, client=writes)
        writes.sadd(registry.keys.id_chars, *chars)
        registry.execute(writes)
        return looked
