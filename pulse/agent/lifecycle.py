"""Recording each task's story in the registry, at the source.

The producer records ``scheduled`` before the message is published (so a freshly launched id is
never unknown), by wrapping its app's task sender (``record_publishing``); the worker records
running, finished, failed, retried and revoked through Celery's signals. None of this needs the
web server to be up. A registry error is logged and never fails a task or a publish.
"""

import json
import logging
import time
from typing import Any

from celery import Celery, signals, states
from celery.utils.imports import symbol_by_name

from pulse.record.failures import failure_json
from pulse.record.safejson import bounded_json
from pulse.record.statuses import (
    ABANDONED,
    FAILED,
    FINISHED,
    RETRYING,
    REVOKED,
    RUNNING,
    SCHEDULED,
    UNSTARTED,
)

log = logging.getLogger(__name__)

REPR_LIMIT = 2048
CALL_LIMIT = 64 * 1024  # larger arguments are not kept, so such a task cannot be replayed
PRUNE_EVERY = 60.0


def registry_of(app: Celery):
    """The app's registry, or None for a Celery app Pulse was not installed in."""
    agent = getattr(app, "pulse", None)
    return getattr(agent, "registry", None)


def _replayable_call(args: Any, kwargs: Any) -> dict | None:
    try:
        text = json.dumps({"args": list(args or ()), "kwargs": dict(kwargs or {})})
    except (TypeError, ValueError):
        return None
    return json.loads(text) if len(text) <= CALL_LIMIT else None


def periodic_mark(headers: Any) -> str | bool | None:
    """The beat entry a message's own headers name (django-celery-beat's ``periodic_task_name``,
    Pulse's run now), True when Celery's beat sent it without naming one (``celery_beat_task``)."""
    entry = headers.get("periodic_task_name")
    if isinstance(entry, str) and entry:
        return entry[:REPR_LIMIT]
    return True if headers.get("celery_beat_task") else None


def record_publish(app: Celery, name: str, message: Any, queue: Any, extra: Any = None) -> None:
    """Record a task (and the chain steps after it) before its message is published; ``extra``
    are the headers the sender adds to the message's (a periodic task's mark among them)."""
    registry = registry_of(app)
    if registry is None:
        return
    headers, _properties, body, _sent_event = message
    args, kwargs, embed = body if isinstance(body, tuple | list) and len(body) == 3 else ((), {}, {})
    retries = headers.get("retries") or 0
    now = time.time()
    fields = {
        "state": states.RETRY if retries else states.PENDING,
        "name": name,
        "args": str(headers.get("argsrepr", ""))[:REPR_LIMIT],
        "kwargs": str(headers.get("kwargsrepr", ""))[:REPR_LIMIT],
        "queue": getattr(queue, "name", queue) or app.conf.task_default_queue,
        "retries": retries,
        "eta": headers.get("eta"),
        "expires": headers.get("expires"),
        "parent_id": headers.get("parent_id"),
        "root_id": headers.get("root_id"),
        "group_id": headers.get("group"),
        "group_index": headers.get("group_index"),
        "call": _replayable_call(args, kwargs),
        "periodic_entry": periodic_mark(extra) if extra else None,
    }
    steps = [sig for sig in reversed((embed or {}).get("chain") or []) if isinstance(sig, dict)]
    step_ids = [sig.get("options", {}).get("task_id") for sig in steps]
    fields["chain"] = [step for step in step_ids if step] or None
    pipe = registry.pipeline()
    # A republished retry must not move the record back from running to scheduled.
    registry.write(headers["id"], RETRYING if retries else SCHEDULED, fields=fields,
                   fill={"sent_at": now}, parent=headers.get("parent_id"), client=pipe)
    for sig, step_id in zip(steps, step_ids, strict=True):
        if step_id:
            registry.write(step_id, UNSTARTED, fill={
                "name": sig.get("task"), "args": repr(tuple(sig.get("args") or ()))[:REPR_LIMIT],
                "kwargs": repr(sig.get("kwargs") or {})[:REPR_LIMIT], "root_id": headers.get("root_id"),
                "chain_of": headers["id"], "call": _replayable_call(sig.get("args"), sig.get("kwargs")),
            }, client=pipe)
    body_sig = (embed or {}).get("chord")
    body_id = body_sig.get("options", {}).get("task_id") if isinstance(body_sig, dict) else None
    if body_id and headers.get("group"):
        # A chord's header members carry its body: record it as waiting for the header.
        registry.write(body_id, UNSTARTED, fill={
            "name": body_sig.get("task"), "chord_of": headers["group"], "root_id": headers.get("root_id"),
            "call": _replayable_call(body_sig.get("args"), body_sig.get("kwargs"))}, client=pipe)
        pipe.set(registry.keys.chord_body(headers["group"]), body_id, ex=int(registry.retention))
    registry.execute(pipe)


def _recording(app: Celery, send: Any, default_queue: Any) -> Any:
    def send_task_message(producer, name, message, queue=None, **kwargs):
        try:
            record_publish(app, name, message, queue or default_queue().name, kwargs.get("headers"))
        except Exception as exc:  # the registry is a record, not a gate: publish anyway
            log.warning("pulse: task %s not recorded before publishing: %r", name, exc)
        return send(producer, name, message, queue=queue, **kwargs)

    send_task_message.pulse_recording = True
    return send_task_message


def record_publishing(app: Celery) -> None:
    """Record every task ``app`` publishes before it is published.

    Celery builds its AMQP layer, and the task sender in it, on first use: wrap the sender then
    (``app.amqp_cls`` becomes a subclass of the user's class), or now if it was already built.
    """
    if "amqp" in app.__dict__:  # already built: wrap the sender on the instance
        amqp = app.amqp
        if not getattr(amqp.send_task_message, "pulse_recording", False):
            amqp.send_task_message = _recording(app, amqp.send_task_message, lambda: amqp.default_queue)
        return
    base = symbol_by_name(app.amqp_cls)
    if getattr(base, "pulse_recording", False):
        return

    class RecordingAMQP(base):
        pulse_recording = True

        def _create_task_sender(self):
            return _recording(self.app, super()._create_task_sender(), lambda: self.default_queue)

    app.amqp_cls = RecordingAMQP


def record(task: Any, status: str, fields: dict, point: tuple | None = None) -> None:
    """Write the running task's record (raises on a Redis error: the caller decides)."""
    registry = registry_of(task.app)
    if registry is not None:
        registry.write(task.request.id, status, fields=fields, point=point)


def _write(task, task_id: str, status: str, **fields: Any) -> None:
    registry = registry_of(task.app)
    if registry is None or task_id is None:
        return
    try:
        registry.write(task_id, status, fields=fields)
    except Exception as exc:  # never fail a task because its story could not be written
        log.warning("pulse: task %s not recorded as %s: %r", task_id, status, exc)


def abandon_chain(task, request) -> None:
    """Mark the chain steps after a task that failed or was revoked as ``abandoned``."""
    registry = registry_of(task.app)
    steps = getattr(request, "chain", None) or []
    if registry is None:
        return
    for sig in steps:
        step_id = sig.get("options", {}).get("task_id") if isinstance(sig, dict) else None
        if step_id:
            try:
                registry.write(step_id, ABANDONED, fields={"finished_at": time.time()},
                               expect=[UNSTARTED, "none"])
            except Exception as exc:
                log.warning("pulse: chain step %s not marked abandoned: %r", step_id, exc)


def _on_prerun(sender=None, task_id=None, task=None, **_: Any) -> None:
    request = task.request
    _write(task, task_id, RUNNING, state=states.STARTED, started_at=time.time(),
           worker=request.hostname, retries=request.retries or 0)


def _on_success(sender=None, result=None, **_: Any) -> None:
    _write(sender, sender.request.id, FINISHED, state=states.SUCCESS, result=bounded_json(result),
           finished_at=time.time(), has_result=not sender.ignore_result)


def _on_failure(sender=None, task_id=None, exception=None, einfo=None, **_: Any) -> None:
    failure = failure_json(type(exception).__name__, str(exception)[:REPR_LIMIT],
                           getattr(einfo, "traceback", None))
    _write(sender, task_id, FAILED, state=states.FAILURE, failure=failure, finished_at=time.time(),
           has_result=True)
    if sender.request.id == task_id:  # in the pool child, where the request is known
        abandon_chain(sender, sender.request)


def _on_retry(sender=None, request=None, reason=None, **_: Any) -> None:
    _write(sender, request.id, RETRYING, state=states.RETRY, last_error=str(reason)[:REPR_LIMIT])


def _on_revoked(sender=None, request=None, terminated=False, signum=None, expired=False, **_: Any) -> None:
    reason = "expired" if expired else ("terminated" if terminated else "revoked")
    _write(sender, request.id, REVOKED, state=states.REVOKED, finished_at=time.time(),
           revoke_reason=reason, has_result=True)
    abandon_chain(sender, request)


def _on_postrun(sender=None, **_: Any) -> None:
    # Keep the registry bounded even when no dashboard runs: every process prunes now and then.
    agent = getattr(sender.app, "pulse", None)
    if getattr(agent, "registry", None) is None or time.monotonic() < agent.next_prune:
        return
    agent.next_prune = time.monotonic() + PRUNE_EVERY
    try:
        agent.registry.prune()
    except Exception as exc:
        log.warning("pulse: registry not pruned: %r", exc)


def install() -> None:
    """Connect the worker-side signal handlers (once per process; they route by the task's app)."""
    for signal, handler in ((signals.task_prerun, _on_prerun), (signals.task_success, _on_success),
                            (signals.task_failure, _on_failure), (signals.task_retry, _on_retry),
                            (signals.task_revoked, _on_revoked), (signals.task_postrun, _on_postrun)):
        signal.connect(handler, weak=False, dispatch_uid=f"pulse.{handler.__name__}")
