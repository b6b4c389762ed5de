"""The task-side helpers, run as real Celery tasks (eagerly) against a real Redis."""

import math
import threading
import time

import pytest
import redis
from celery import Task
from celery.exceptions import Ignore

from pulse.agent import wire
from pulse.agent.failure import TaskFailure, fail
from pulse.agent.progress import OUTAGE_PAUSE, progress_meta, report_progress
from pulse.agent.progress_writer import progress_writer
from pulse.server.model.results import read_meta
from tasks.celery import make_celery


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


class Published:
    """The progress events and stored states Redis delivered while the block ran."""

    def __init__(self, redis_url: str) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.sub = self.client.pubsub(ignore_subscribe_messages=True)
        self.sub.psubscribe("/*celeryev/task.progress", "celery-task-meta-*")
        self.events: list[dict] = []
        self.states: list[bytes] = []

    def __enter__(self) -> "Published":
        return self

    def __exit__(self, *exc) -> None:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            message = self.sub.get_message(timeout=0.1)
            if message is None:
                continue
            if message["channel"].startswith(b"celery-task-meta-"):
                self.states.append(message["data"])
            else:
                self.events += wire.decode(message["data"])
        self.sub.close()
        self.client.close()


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

    with Published(redis_url) as published:
        sent = loop.apply().get()
    assert sent[0] is True and sent[-1] is True
    assert sent.count(True) == 2
    assert [event["current"] for event in published.events] == [1, 1000]
    assert len(published.states) == 2


def test_every_call_goes_out_with_no_interval(redis_url):
    app = make_app(redis_url, interval="0")

    @app.task(bind=True, base=Recording, shared=False)
    def loop(self):
        return [report_progress(self, i, None, "working") for i in range(5)]

    with Published(redis_url) as published:
        assert loop.apply().get() == [True] * 5
    assert [event["type"] for event in published.events] == ["task-progress"] * 5
    last = published.events[-1]
    assert {k: last[k] for k in ("current", "total", "percent", "message")} == {
        "current": 4, "total": None, "percent": None, "message": "working"}


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


def test_one_round_trip_writes_what_the_three_celery_calls_write(redis_url):
    """The pipelined writer against update_state + send_event: same backend entry, same event."""
    app = make_app(redis_url, interval="0")
    assert progress_writer(app) is not None

    @app.task(bind=True, shared=False)
    def both(self):
        report_progress(self, 3, 4, "fast")
        fast = read_meta(app, self.request.id)
        self.update_state(state="PROGRESS", meta=progress_meta(3, 4, "fast"))
        self.send_event("task-progress", retry=False, **progress_meta(3, 4, "fast"))
        return fast, read_meta(app, self.request.id), self.request.id

    with Published(redis_url) as published:
        fast, slow, task_id = both.apply().get()
    assert fast == slow and fast["status"] == "PROGRESS" and fast["task_id"] == task_id
    assert published.states[0] == published.states[1]
    ours, celerys = published.events
    for key in ("hostname", "utcoffset", "pid", "uuid", "current", "total", "percent", "message", "type"):
        assert ours[key] == celerys[key], key
    assert app.pulse.registry.get(task_id)["progress"]["message"] == "fast"
    assert app.backend.client.ttl(app.backend.get_key_for_task(task_id)) > 0


def test_celerys_own_receiver_reads_the_pipelined_event(redis_url):
    app = make_app(redis_url, interval="0")
    received, ready = [], threading.Event()

    def listen():
        with app.connection_for_read() as conn:
            receiver = app.events.Receiver(conn, handlers={"task-progress": received.append})
            for _ in receiver.itercapture(limit=None, timeout=5, wakeup=False):
                ready.set()
                if received:
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert ready.wait(5)

    @app.task(bind=True, shared=False)
    def once(self):
        report_progress(self, 1, 2, "seen by kombu")
        return self.request.id

    task_id = once.apply().get()
    listener.join(10)
    assert [(e["uuid"], e["current"], e["message"]) for e in received] == [(task_id, 1, "seen by kombu")]


def test_progress_never_overwrites_a_stored_success(redis_url):
    app = make_app(redis_url, interval="0")

    @app.task(bind=True, shared=False)
    def duplicate(self):
        app.backend.store_result(self.request.id, 42, "SUCCESS")  # the first run finished
        report_progress(self, 1, 2)  # a redelivered duplicate reports late
        return self.request.id

    meta = read_meta(app, duplicate.apply().get())
    assert (meta["status"], meta["result"]) == ("SUCCESS", 42)


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
    write = app.pulse.registry.write
    app.pulse.registry.write = lambda task_id, *args, **kwargs: (attempts.append(task_id),
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


@pytest.mark.parametrize("db, options", [(0, {}), (3, {}), (0, {"fanout_prefix": "custom."}),
                                         (0, {"fanout_patterns": False}), (2, {"fanout_prefix": False})])
def test_the_event_topic_is_the_one_kombu_uses(redis_url, db, options):
    app = make_celery({"REDIS_URL": redis_url.rsplit("/", 1)[0] + f"/{db}"})
    app.conf.broker_transport_options = {**app.conf.broker_transport_options, **options}
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        expected = (channel.keyprefix_fanout, channel.fanout_patterns)
    assert wire.topic_prefix(app) == expected
