"""The tasks as Pulse tells them: the registry, checked against Celery's result backend.

``describe`` is the truthful answer for one id: the registry's record; a record adopted from the
result backend when the registry never saw the task; ``expired`` once Celery no longer has a
result it had; ``unknown`` only when neither ever knew it.
"""

import logging
from collections.abc import Callable
from typing import Any

from celery import Celery

from pulse.record.registry import Registry, as_text, step
from pulse.record.statuses import CELERY_ENDS, EXPIRED
from pulse.server.model.results import read_meta
from pulse.server.model.taskjson import record_json
from pulse.server.model.writes import event_write, meta_write

log = logging.getLogger(__name__)



class TaskStore:
    """Task JSON from the registry and the result backend, and the writes that keep it true."""

    def __init__(self, registry: Registry, celery_app: Celery) -> None:
        self.registry = registry
        self.celery = celery_app

    def fetch_meta(self, task_id: str) -> dict | None:
        """The raw result-backend entry of a task, or None when absent or unreadable."""
        try:
            return read_meta(self.celery, task_id)
        except Exception as exc:  # backend down: the registry still describes the task
            log.warning("pulse: result of task %s not read: %r", task_id, exc)
            return None

    def describe(self, task_id: str) -> dict[str, Any]:
        """The task JSON for ``task_id``, whatever Celery forgot."""
        record = self.registry.get(task_id)
        if record is None:
            meta = self.fetch_meta(task_id)
            if meta is None:
                return record_json(None, task_id)
            status, fields = meta_write(meta)
            self.registry.write(task_id, status, fields=fields)  # adopt what the backend knows
            return record_json(self.registry.get(task_id))
        if record.get("status") in CELERY_ENDS and record.get("has_result"):
            if self._result_gone(task_id):
                self.registry.write(task_id, EXPIRED, expect=[record["status"]])
                record = self.registry.get(task_id)
        return record_json(record)

    def _result_gone(self, task_id: str) -> bool:
        backend = self.celery.backend
        try:
            return not backend.client.exists(backend.get_key_for_task(task_id))
        except Exception:  # cannot tell: do not claim it expired
            return False

    def get_json(self, task_id: str) -> dict[str, Any]:
        """The task JSON straight from the registry, with no backend check."""
        return record_json(self.registry.get(task_id), task_id)

    def many_json(self, task_ids: list[str],
                  points: Callable[[str], int | None] = lambda task_id: None) -> list[dict[str, Any]]:
        """The task JSON of each id; ``points`` bounds the history read (see ``Registry.get_many``)."""
        records = self.registry.get_many(task_ids, points)
        return [record_json(record, task_id) for task_id, record in zip(task_ids, records, strict=True)]

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """The most recently active tasks (by their last change), most recent first."""
        newest = self.registry.client.zrevrange(self.registry.keys.updated, 0, limit - 1)
        ids = [as_text(i) for i in newest]
        return [task for task in self.many_json(ids) if task["status"] != "unknown"]

    def apply_event(self, event: dict[str, Any]) -> dict[str, Any]:
        """Write one task event into the registry (idempotently); returns the task JSON after it."""
        return self.apply_events([event])[0]

    def apply_events(self, events: list[dict[str, Any]],
                     points: Callable[[str], int | None] = lambda task_id: None) -> list[dict[str, Any]]:
        """Write task events in order, in one round trip; the JSON of each task they touched, once.

        Progress is written at the source, so a progress event only makes its task's JSON be read.
        ``points`` bounds the progress history read per task (see ``Registry.get_many``).
        """
        registry = self.registry
        steps: dict[str, list] = {}  # task id -> its writes, in order
        succeeded: set[str] = set()
        for event in events:
            task_id = event["uuid"]
            status, fields, fill = event_write(event)
            writes = steps.pop(task_id, [])  # re-inserted: the order of last change
            steps[task_id] = writes
            if event["type"] == "task-succeeded":
                succeeded.add(task_id)
            if status is not None:
                parent = event.get("parent_id") if event["type"] == "task-sent" else None
                writes.append(step(status, fields, fill, parent=parent, argument_terms=False))
        pipe = registry.pipeline()
        for task_id, writes in steps.items():
            if writes:  # one call per task: its indexes are updated once
                registry.write_steps(task_id, writes, client=pipe)
        ids = list(steps)
        registry.read_into(pipe, ids, points)  # the same round trip reads what they wrote
        records = registry.records(ids, registry.execute(pipe))
        # Not written at the source (a worker without Pulse's signals): take the backend's value.
        no_result = [task_id for task_id, record in zip(ids, records, strict=True)
                     if task_id in succeeded and record is not None and "result" not in record]
        if no_result and self._fill_results(no_result):
            records = registry.get_many(ids, points)
        return [record_json(record, task_id) for task_id, record in zip(ids, records, strict=True)]

    def _fill_results(self, task_ids: list[str]) -> bool:
        """Fill the result of succeeded records from the backend; True when any was found."""
        backend = self.celery.backend
        try:
            payloads = backend.client.mget([backend.get_key_for_task(task_id) for task_id in task_ids])
        except Exception as exc:  # backend down: the registry still describes the tasks
            log.warning("pulse: results of %d tasks not read: %r", len(task_ids), exc)
            return False
        pipe = self.registry.pipeline()
        for task_id, payload in zip(task_ids, payloads, strict=True):
            meta = backend.decode(payload) if payload is not None else None
            if isinstance(meta, dict) and meta.get("status") == "SUCCESS":
                self.registry.write(task_id, fill=meta_write(meta)[1], client=pipe)
        return bool(self.registry.execute(pipe)) if len(pipe) else False

    def reconcile(self, task_ids: list[str]) -> list[dict[str, Any]]:
        """Re-read active records against the result backend; returns the tasks that changed."""
        backend, changed = self.celery.backend, []
        for start in range(0, len(task_ids), 500):
            batch = task_ids[start:start + 500]
            payloads = backend.client.mget([backend.get_key_for_task(task_id) for task_id in batch])
            for task_id, payload in zip(batch, payloads, strict=True):
                meta = backend.decode(payload) if payload is not None else None
                if not isinstance(meta, dict) or meta.get("status") not in ("SUCCESS", "FAILURE", "REVOKED"):
                    continue
                status, fields = meta_write(meta)
                code, _record = self.registry.write(task_id, status, fields=fields)
                if code == 1:
                    changed.append(self.get_json(task_id))
        return changed

    def expire_gone(self, task_ids: list[str]) -> list[dict[str, Any]]:
        """Mark ended records whose stored result Celery no longer has as ``expired``."""
        backend, changed = self.celery.backend, []
        pipe = self.registry.client.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hmget(self.registry.key(task_id), "status", "has_result")
            pipe.exists(backend.get_key_for_task(task_id))
        replies = pipe.execute()
        for index, task_id in enumerate(task_ids):
            (status, has_result), exists = replies[2 * index], replies[2 * index + 1]
            status = as_text(status) if status else None
            if status in CELERY_ENDS and has_result == b"true" and not exists:
                code, _record = self.registry.write(task_id, EXPIRED, expect=[status])
                if code == 1:
                    changed.append(self.get_json(task_id))
        return changed
