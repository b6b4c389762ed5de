"""One Redis round trip for a progress update's three writes: registry, stored state, live event.

Written one by one, a progress update costs four round trips: the registry script, Celery's
``update_state`` (a GET, then SETEX + PUBLISH) and ``send_event`` (through a kombu producer).
On a loaded machine each round trip is a few hundred microseconds of system calls, so a task
reporting often paid milliseconds per update. This writer sends all three in one pipeline, with
the same effects: the backend entry is Celery's own meta (``_get_result_meta``, ``encode``), kept
from overwriting a SUCCESS by a small script as ``store_result`` does, and the event is the
message Celery's dispatcher would publish. It applies only where that equivalence holds: a Redis
result backend and broker on the same server, JSON serializers, and Pulse's registry; otherwise
``progress_writer`` returns None and the helper makes the three calls.
"""

import math
from typing import Any

from celery import Celery, Task
from celery.backends.redis import RedisBackend

from pulse.record.scripts import script
from pulse.record.statuses import RUNNING

from . import wire as events


class ProgressWriter:
    """Writes a task's PROGRESS update for one Celery app in one pipelined round trip."""

    def __init__(self, app: Celery, registry: Any, prefix: str, patterns: bool) -> None:
        self.app = app
        self.registry = registry
        self.exchange = app.conf.event_exchange
        self.prefix, self.patterns = prefix, patterns
        self._state = app.backend.client.register_script(script("state.lua"))
        self._state_loaded = False

    def write(self, task: Task, state: str, meta: dict[str, Any], point: tuple[float, float]) -> None:
        request, backend = task.request, self.app.backend
        pipe = self.registry.pipeline()
        self.registry.write(request.id, RUNNING, fields={"state": state, "progress": meta}, point=point,
                            client=pipe)
        stored = backend._get_result_meta(result=meta, state=state, traceback=None, request=request)
        stored["task_id"] = request.id
        if not self._state_loaded:  # EVALSHA in the pipeline, as the registry does (see its _pipelined)
            backend.client.script_load(self._state.script)
            self._state_loaded = True
        pipe.evalsha(self._state.sha, 1, backend.get_key_for_task(request.id), backend.encode(stored),
                     math.ceil(backend.expires or 0))
        body = events.event("task-progress", request.hostname, self.app.clock.forward(), uuid=request.id,
                            **meta)
        routing_key, message = events.encode(body, self.exchange)
        pipe.publish(events.topic(self.prefix, self.patterns, self.exchange, routing_key), message)
        try:
            self.registry.execute(pipe, scripts=(self._state.script,))
        except Exception:
            self._state_loaded = False  # Redis may have restarted: load the script again next time
            raise


def progress_writer(app: Celery) -> ProgressWriter | None:
    """The app's one-round-trip writer, or None where the three separate calls are needed."""
    agent = getattr(app, "pulse", None)
    return None if agent is None else agent.progress_writer


def make_writer(agent: Any) -> ProgressWriter | None:
    """The writer for an ``Agent``'s app, if the equivalence holds (a registry of its own in
    ``PULSE_REDIS_URL`` is another server: no shared pipeline)."""
    app, conf = agent.app, agent.app.conf
    if (isinstance(app.backend, RedisBackend) and conf.result_serializer == "json"
            and conf.event_serializer == "json" and str(conf.broker_url) == str(conf.result_backend)
            and not agent.settings.redis_url):
        try:
            return ProgressWriter(app, agent.registry, *events.topic_prefix(app))
        except events.UnsupportedBroker:
            return None
    return None
