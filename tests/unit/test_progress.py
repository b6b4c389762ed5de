"""The task-side helpers, run as real Celery tasks (eagerly) against a real Redis."""

import math

import pytest
from celery import Task
from celery.exceptions import Ignore

from pulse.results import read_meta
from tasks.celery import make_celery
from tasks.progress import OUTAGE_PAUSE, TaskFailure, fail, progress_meta, report_progress


class Recording(Task):
    """A real task that also records what the helpers asked of it."""

    calls: list = []

    def update_state(self, task_id=None, state=None, meta=None, **kwargs):
        self.calls.append(("state", state, meta))
        return super().update_state(task_id, state, meta, **kwargs)

    def send_event(self, type_, retry=True, retry_policy=None, **fields):
        self.calls.append(("event", type_, fields))
        return super().send_event(type_, retry=retry, retry_policy=retry_policy, **fields)


def make_app(redis_url: str, interval: str = "0.25"):
    app = make_celery({"REDIS_URL": redis_url, "PULSE_PROGRESS_INTERVAL": interval})
    Recording.calls = []
    return app


def test_progress_meta_fields_and_percent():
    assert progress_meta(25, 200, "reading") == {
        "current": 25, "total": 200, "percent": 12.5, "message": "reading"}


def test_progress_meta_unknown_total_has_no_percent():
    assert progress_meta(7) == {"current": 7, "total": None, "percent": None, "message": None}


@pytest.mark.parametrize(
    ("current", "total", "percent"),
    [(150, 100, 100.0), (-5, 100, 0.0), (math.nan, 10, 0.0), (3, 0, None), (3, math.inf, None),
     ("4", "8", 50.0), ("x", 8, 0.0)],
)
def test_progress_meta_bounds_absurd_values(current, total, percent):
    assert progress_meta(current, total)["percent"] == percent


def test_progress_meta_caps_huge_messages():
    assert len(progress_meta(1, 2, "x" * 100_000)["message"]) == 1000


def test_tight_loop_is_throttled_but_first_and_final_calls_go_out(redis_url):
    app = make_app(redis_url, interval="30")

    @app.task(bind=True, base=Recording, shared=False)
    def loop(self):
        return [report_progress(self, i, 1000, f"item {i}") for i in range(1, 1001)]

    sent = loop.apply().get()
    assert sent[0] is True and sent[-1] is True
    assert sent.count(True) == 2
    states = [meta["current"] for kind, state, meta in Recording.calls if kind == "state"]
    events = [fields["current"] for kind, name, fields in Recording.calls if kind == "event"]
    assert states == [1, 1000]
    assert events == [1, 1000]


def test_every_call_goes_out_with_no_interval(redis_url):
    app = make_app(redis_url, interval="0")

    @app.task(bind=True, base=Recording, shared=False)
    def loop(self):
        return [report_progress(self, i, None, "working") for i in range(5)]

    assert loop.apply().get() == [True] * 5
    events = [c for c in Recording.calls if c[0] == "event"]
    assert [c[1] for c in events] == ["task-progress"] * 5
    assert events[-1][2] == {"current": 4, "total": None, "percent": None, "message": "working"}


def test_progress_is_stored_durably_as_PROGRESS(redis_url):
    app = make_app(redis_url)

    @app.task(bind=True, shared=False)
    def half(self):
        report_progress(self, 5, 10, "halfway")
        return self.request.id

    task_id = half.apply().get()
    # apply() does not store the return value, so the backend still holds the progress.
    meta = read_meta(app, task_id)
    assert meta["status"] == "PROGRESS"
    assert meta["result"] == {"current": 5, "total": 10, "percent": 50.0, "message": "halfway"}


def test_progress_outside_a_task_is_a_no_op(redis_url):
    app = make_app(redis_url)

    @app.task(bind=True, base=Recording, shared=False)
    def plain(self):
        return None

    assert report_progress(plain, 1, 2) is False
    assert Recording.calls == []


def test_unreachable_redis_never_fails_the_task_and_pauses_reporting():
    app = make_celery({"REDIS_URL": "redis://127.0.0.1:1/0", "PULSE_REDIS_TIMEOUT": "1"})
    Recording.calls = []

    attempts = []
    write = app.pulse_registry.write
    app.pulse_registry.write = lambda task_id, *args, **kwargs: (attempts.append(task_id),
                                                                 write(task_id, *args, **kwargs))[1]

    @app.task(bind=True, base=Recording, shared=False)
    def loop(self):
        results = [report_progress(self, i, 3) for i in (1, 2, 3)]
        return results, self.request.pulse_outage, self.request.id

    results, in_outage, task_id = loop.apply().get()
    assert results == [False, False, False]
    assert in_outage is True
    # Only the first call tried to write (the registry, first, failed); the rest waited out the
    # OUTAGE_PAUSE. The other attempts are the worker-side signals recording running and finished.
    assert attempts.count(task_id) == 3 and Recording.calls == []
    assert OUTAGE_PAUSE >= 1


def test_fail_stores_structured_failure_and_raises_ignore(redis_url):
    app = make_app(redis_url)

    @app.task(bind=True, base=Recording, shared=False)
    def broken(self):
        try:
            int("abc")
        except ValueError:
            fail(self, "row 3 is not a number", exc_type=ValueError, step=3, input="abc",
                 extra={"nested": [1, 2]})

    result = broken.apply()
    assert isinstance(result.result, Ignore)
    meta = read_meta(app, result.id)
    assert meta["status"] == "FAILURE"
    assert meta["result"] == {
        "exc_type": "ValueError", "exc_message": ["row 3 is not a number"], "exc_module": "builtins",
        "step": 3, "input": "abc", "extra": {"nested": [1, 2]},
    }
    assert "int(\"abc\")" in meta["traceback"]
    kind, name, fields = Recording.calls[-1]
    assert (kind, name) == ("event", "task-failed")
    assert fields["details"] == {"step": 3, "input": "abc", "extra": {"nested": [1, 2]}}
    assert fields["exception"] == "ValueError('row 3 is not a number')"


def test_celery_reads_the_structured_failure(redis_url):
    app = make_app(redis_url)

    @app.task(bind=True, shared=False)
    def broken(self):
        fail(self, "custom failure", code=42)

    task_id = broken.apply().id
    result = app.AsyncResult(task_id)
    assert result.state == "FAILURE"
    assert isinstance(result.info, TaskFailure)
    assert result.info.args == ("custom failure",)
    assert "broken" in result.traceback


def test_fail_rejects_reserved_detail_names(redis_url):
    app = make_app(redis_url)

    @app.task(bind=True, shared=False)
    def broken(self):
        fail(self, "x", exc_module="os")

    with pytest.raises(TypeError, match="reserved"):
        broken.apply().get()


def test_fail_bounds_non_json_details(redis_url):
    app = make_app(redis_url)

    @app.task(bind=True, shared=False)
    def broken(self):
        fail(self, "x", obj=object(), blob="y" * 100_000)

    meta = read_meta(app, broken.apply().id)["result"]
    assert meta["obj"].startswith("<object object")
    assert len(meta["blob"]) <= 16_384


def test_fail_with_redis_down_raises_a_plain_failure():
    app = make_celery({"REDIS_URL": "redis://127.0.0.1:1/0", "PULSE_REDIS_TIMEOUT": "1"})

    @app.task(bind=True, shared=False)
    def broken(self):
        fail(self, "cannot store this")

    result = broken.apply()
    assert isinstance(result.result, TaskFailure)
    assert str(result.result) == "cannot store this"
