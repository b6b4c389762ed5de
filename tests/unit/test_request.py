"""The worker's request bounds the text of Celery's failure events (pulse/agent/request.py),
whatever base class or request class the tasks use."""

from celery import Celery, Task
from celery.utils.imports import symbol_by_name
from celery.worker.request import Request

import pulse
from pulse.agent.request import BoundedEvents, bound_failure_events, bounded
from pulse.record.safejson import MAX_CHARS
from tasks.celery import make_celery


def test_failure_events_carry_bounded_text_and_others_are_untouched(monkeypatch):
    sent = []
    monkeypatch.setattr(Request, "send_event", lambda self, type, **fields: sent.append((type, fields)))
    request = object.__new__(bounded(Request))  # send_event needs nothing else of a request
    huge = "x" * (MAX_CHARS * 4)
    request.send_event("task-failed", exception=huge, traceback=huge)
    request.send_event("task-retried", exception=huge, traceback=None)
    request.send_event("task-succeeded", result=huge, runtime=1.0)
    (_, failed), (_, retried), (_, succeeded) = sent
    assert len(failed["exception"]) <= MAX_CHARS and len(failed["traceback"]) <= MAX_CHARS
    assert failed["exception"].startswith("xxx") and len(retried["exception"]) <= MAX_CHARS
    assert retried["traceback"] is None
    assert succeeded == {"result": huge, "runtime": 1.0}


def test_every_task_of_the_demo_app_gets_the_bounded_request_when_the_worker_starts():
    app = make_celery({"REDIS_URL": "redis://127.0.0.1:1/0"})
    app.loader.import_default_modules()
    bound_failure_events(app)
    request_cls = symbol_by_name(app.tasks["tasks.demo.count"].Request)
    assert issubclass(request_cls, BoundedEvents) and issubclass(request_cls, Request)


class TheirRequest(Request):
    """A user's own request class: kept, with bounded events mixed in."""

    marker = "theirs"


class TheirTask(Task):
    Request = TheirRequest


def test_bounded_request_composes_with_their_base_class_task_cls_and_request():
    app = Celery("theirs", broker="memory://", backend="cache+memory://", task_cls=TheirTask)
    pulse.install(app, env={})

    @app.task(name="theirs.plain")
    def plain():
        return 1

    @app.task(name="theirs.based", base=TheirTask)
    def based():
        return 2

    @app.task(name="theirs.celery_base", base=Task)
    def celery_base():
        return 3

    bound_failure_events(app)
    bound_failure_events(app)  # idempotent: a second worker_init changes nothing
    for name in ("theirs.plain", "theirs.based"):
        request_cls = app.tasks[name].Request
        assert issubclass(request_cls, BoundedEvents) and issubclass(request_cls, TheirRequest)
        assert request_cls.marker == "theirs" and request_cls.__mro__.count(BoundedEvents) == 1
    assert issubclass(app.tasks["theirs.celery_base"].Request, BoundedEvents)
