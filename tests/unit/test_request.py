"""The worker's request bounds the text of Celery's failure events (tasks/request.py)."""

from celery.worker.request import Request

from tasks.celery import make_celery
from tasks.request import BoundedRequest, PulseTask
from tasks.safejson import MAX_CHARS


def test_failure_events_carry_bounded_text_and_others_are_untouched(monkeypatch):
    sent = []
    monkeypatch.setattr(Request, "send_event", lambda self, type, **fields: sent.append((type, fields)))
    request = object.__new__(BoundedRequest)  # send_event needs nothing else of a request
    huge = "x" * (MAX_CHARS * 4)
    request.send_event("task-failed", exception=huge, traceback=huge)
    request.send_event("task-retried", exception=huge, traceback=None)
    request.send_event("task-succeeded", result=huge, runtime=1.0)
    (_, failed), (_, retried), (_, succeeded) = sent
    assert len(failed["exception"]) <= MAX_CHARS and len(failed["traceback"]) <= MAX_CHARS
    assert failed["exception"].startswith("xxx") and len(retried["exception"]) <= MAX_CHARS
    assert retried["traceback"] is None
    assert succeeded == {"result": huge, "runtime": 1.0}


def test_every_task_of_a_pulse_app_uses_the_bounded_request():
    app = make_celery({"REDIS_URL": "redis://127.0.0.1:1/0"})
    app.loader.import_default_modules()
    task = app.tasks["tasks.demo.count"]
    assert isinstance(task, PulseTask) and task.Request == "tasks.request:BoundedRequest"
