"""The durable task registry: one Redis record per task, independent of Celery's result expiry.

Written at the source (the producer, the worker's signals, the progress and failure helpers)
and by the web server's monitor, always through one atomic Lua script that enforces the
lifecycle (``lua/write.lua``), so writes are idempotent and a late or duplicated one never moves
a record out of the status it ended in.
"""

import json
import time
from collections.abc import Callable, Iterable
from functools import cached_property
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .keys import Keys
from .scripts import script
from .terms import joined, record_terms

# Stored as plain strings, because the Lua script compares and indexes them.
RAW_FIELDS = frozenset({"status", "state", "name", "worker", "queue", "group_id", "terms", "exc_type"})
# The fields a record's search terms come from (terms.py), and of those the arguments.
SEARCHED = frozenset({"args", "kwargs", "call", "result", "failure"})
ARGUMENTS = frozenset({"args", "kwargs", "call"})
FLOAT_FIELDS = frozenset({"created_at", "updated_at"})


def encode(value: Any, field: str) -> str:
    return str(value) if field in RAW_FIELDS else json.dumps(value, separators=(",", ":"))


def decode(fields: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field, value in fields.items():
        if field in RAW_FIELDS:
            out[field] = value
        elif field in FLOAT_FIELDS:
            out[field] = float(value)
        else:
            out[field] = json.loads(value)
    return out


def retry_once() -> Retry:
    """A call that failed on a closed connection is tried once more on a new one; see ``client``."""
    return Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))


class Registry:
    """Reads and writes task records in Redis under ``prefix``, named by ``keys``."""

    def __init__(
        self,
        client: Callable[[], redis.Redis] | redis.Redis,
        prefix: str = "pulse:",
        retention: float = 7 * 86400,
        cap: int = 200_000,
        history_size: int = 50,
    ) -> None:
        self._client = client
        self.keys = Keys(prefix)
        self.retention = retention
        self.cap = cap
        self.history_size = history_size
        self._loaded = False  # write.lua known to be in Redis's script cache (see _pipelined)

    @property
    def prefix(self) -> str:
        return self.keys.prefix

    @prefix.setter
    def prefix(self, prefix: str) -> None:
        # Tests give a registry a prefix of their own after it was built: the names follow.
        self.keys = Keys(prefix)

    @cached_property
    def client(self) -> redis.Redis:
        # A factory defers the connection (Celery creates its backend client lazily).
        client = self._client() if callable(self._client) else self._client
        # After Redis restarts, each pooled connection fails once, "closed by server" (under
        # eventlet the pool's own check misses it): such a call is tried again, once, on a new
        # connection. Not a timeout: a frozen Redis must cost one socket timeout, not two.
        # Set for the connections the pool makes from now on (set_retry fails on Celery's
        # BlockingConnectionPool in redis-py 8.1).
        client.connection_pool.connection_kwargs["retry"] = retry_once()
        return client

    @cached_property
    def _write(self):
        return self.client.register_script(script("write.lua"))

    def pipeline(self) -> Any:
        """A pipeline for ``write(..., client=pipe)`` calls; run it with ``execute``."""
        return self.client.pipeline(transaction=False)

    def execute(self, pipe: Any, scripts: Iterable[str] = ()) -> list:
        """Run a pipeline of writes; ``scripts`` are the other scripts it calls by hash.

        If Redis lost its script cache (restarted without it, as Redis 7 always is), the scripts
        are loaded again and the pipeline runs again from its first refused call: the writes are
        idempotent, and the reads after them must see them. Raises the first error left.
        """
        commands = list(pipe.command_stack)
        replies = pipe.execute(raise_on_error=False)
        refused = [i for i, reply in enumerate(replies) if isinstance(reply, redis.exceptions.NoScriptError)]
        if refused:
            for script in (self._write.script, *scripts):
                self.client.script_load(script)
            self._loaded = True
            again = self.pipeline()
            for args, options in commands[refused[0]:]:
                again.execute_command(*args, **options)
            replies[refused[0]:] = again.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def _pipelined(self, pipe: Any, keys: list[str], args: list[Any]) -> None:
        # EVALSHA straight into the pipeline: a Script object would make redis-py ask Redis
        # whether the script exists at every execute, one more round trip per pipeline.
        if not self._loaded:
            self.client.script_load(self._write.script)
            self._loaded = True
        pipe.evalsha(self._write.sha, len(keys), *keys, *args)

    @cached_property
    def _prune(self):
        return self.client.register_script(script("prune.lua"))

    def key(self, task_id: str) -> str:
        """The hash of a task's record (``keys.task``)."""
        return self.keys.task(task_id)

    def write(
        self,
        task_id: str,
        status: str | None = None,
        fields: dict[str, Any] | None = None,
        fill: dict[str, Any] | None = None,
        point: tuple[float, float] | None = None,
        parent: str | None = None,
        expect: Iterable[str] | None = None,
        now: float | None = None,
        client: Any = None,
    ) -> tuple[int, dict[str, Any] | None]:
        """Apply a write; returns (1 applied | 0 only gaps filled | -1 ``expect`` not met, record).

        ``fields`` are applied when the status move is allowed, ``fill`` only where the record
        has no value yet. ``point`` (time, current) goes to the progress history. ``client`` may
        be a pipeline (from ``pipeline``, run by ``execute``), in which case nothing is returned.
        """
        return self.write_steps(task_id, [step(status, fields, fill, point, parent, expect)], now, client)

    def write_steps(self, task_id: str, steps: list[list[Any]], now: float | None = None,
                    client: Any = None) -> tuple[int, dict[str, Any] | None]:
        """Apply several writes (made by ``step``) to one record in one call, in order.

        Each follows the lifecycle rules as if written alone; the result is that of the last.
        """
        pipelined = client is not None and client is not self.client
        args: list[Any] = [self.prefix, task_id, time.time() if now is None else now,
                           "1" if pipelined else "", self.history_size]
        for one in steps:
            args += one
        keys = [self.keys.task(task_id), self.keys.history(task_id)]
        if pipelined:
            self._pipelined(client, keys, args)
            return 0, None
        result = self._write(keys=keys, args=args, client=client)
        code, flat = result
        return int(code), self._record(task_id, flat) if flat else None

    def _record(self, task_id: str, flat: list) -> dict[str, Any]:
        fields = {as_text(flat[i]): as_text(flat[i + 1]) for i in range(0, len(flat), 2)}
        return {"id": task_id, **decode(fields)}

    def get(self, task_id: str) -> dict[str, Any] | None:
        """The record with its progress history and children, or None."""
        return self.get_many([task_id])[0]

    def get_many(self, task_ids: list[str],
                 points: Callable[[str], int | None] = lambda task_id: None) -> list[dict[str, Any] | None]:
        """Records for ``task_ids`` in one round trip (None where there is none).

        ``points(task_id)`` limits the history read to that many newest points (None: all).
        """
        pipe = self.client.pipeline(transaction=False)
        self.read_into(pipe, task_ids, points)
        return self.records(task_ids, pipe.execute())

    def read_into(self, pipe: Any, task_ids: list[str],
                  points: Callable[[str], int | None] = lambda task_id: None) -> None:
        """Queue the reads of ``get_many`` on ``pipe`` (after writes, say); ``records`` parses them."""
        for task_id in task_ids:
            pipe.hgetall(self.keys.task(task_id))
            limit = points(task_id)
            pipe.lrange(self.keys.history(task_id), 0, -1 if limit is None else limit - 1)
            pipe.smembers(self.keys.children(task_id))

    def records(self, task_ids: list[str], replies: list) -> list[dict[str, Any] | None]:
        """The records in the replies of ``read_into`` (its last ``3 * len(task_ids)`` replies)."""
        replies = replies[len(replies) - 3 * len(task_ids):]
        out = []
        for index, task_id in enumerate(task_ids):
            fields, history, children = replies[3 * index: 3 * index + 3]
            if not fields:
                out.append(None)
                continue
            record = {"id": task_id, **decode({as_text(k): as_text(v) for k, v in fields.items()})}
            record["history"] = [_point(p) for p in reversed(history)]
            record["children"] = sorted(as_text(c) for c in children)
            out.append(record)
        return out

    def prune(self, now: float | None = None, batch: int = 1000, purge: Iterable[str] = ()) -> int:
        """Delete records past the retention, then the oldest ended ones over the cap."""
        args = [self.prefix, time.time() if now is None else now, self.retention, self.cap, batch,
                *purge]
        return int(self._prune(keys=[], args=args))

    def size(self) -> int:
        return int(self.client.zcard(self.keys.all))


def step(status: str | None = None, fields: dict[str, Any] | None = None, fill: dict[str, Any] | None = None,
         point: tuple[float, float] | None = None, parent: str | None = None,
         expect: Iterable[str] | None = None, argument_terms: bool = True) -> list[Any]:
    """One write's arguments for the Lua script (see ``Registry.write`` for their meaning).

    A write of arguments, a result or a failure also carries their search terms (``terms``), which
    the script adds to the record's and indexes. ``argument_terms=False``: not those of the
    arguments (the monitor's writes from events: the producer indexed them at the source, and
    reading an argument repr back into values costs more than the rest of an event's write).
    """
    args: list[Any] = [status or "", ",".join(expect) if expect is not None else ""]
    written = {**(fill or {}), **(fields or {})}
    if not argument_terms:
        written = {key: value for key, value in written.items() if key not in ARGUMENTS}
    if not SEARCHED.isdisjoint(written):
        terms = record_terms(written)
        if terms:
            fields = {**(fields or {}), "terms": joined(terms)}
        # The exception type, indexed (i:exc_type:<type>) for the failure inbox and its filter.
        fields, fill = _with_exc_type(fields), _with_exc_type(fill)
    for pairs in (fields or {}, fill or {}):
        pairs = {k: v for k, v in pairs.items() if v is not None}
        args.append(len(pairs))
        for field, value in pairs.items():
            args += [field, encode(value, field)]
    args += [f"{point[0]:.6f} {point[1]}" if point else "", parent or ""]
    return args


def _with_exc_type(pairs: dict[str, Any] | None) -> dict[str, Any] | None:
    failure = (pairs or {}).get("failure")
    if isinstance(failure, dict) and isinstance(failure.get("exc_type"), str) and failure["exc_type"]:
        return {**pairs, "exc_type": failure["exc_type"]}
    return pairs


def as_text(value: Any) -> str:
    """A Redis reply as text (Celery's backend client answers bytes)."""
    return value.decode() if isinstance(value, bytes) else value


def _point(raw: Any) -> list[float]:
    t, current = as_text(raw).split(" ", 1)
    return [float(t), float(current)]
