"""Live task logs, worker side: the running task's lines captured, batched, bounded and numbered
(real Redis; tasks run in-process with ``apply``, which sets Celery's current task as a worker does)."""

import logging
import threading
import time
import uuid

import pytest
import redis
from celery.utils.log import get_task_logger

from pulse.agent import logs as task_logs
from pulse.agent import wire
from pulse.agent.progress_writer import progress_writer
from pulse.record.logs import KEEP, LINE_LIMIT, TaskLogs
from pulse.server.push.live import log_packet
from tasks.celery import make_celery
from tests.hostile_tasks import Unprintable


@pytest.fixture
def app(redis_url):
    app = make_celery({"REDIS_URL": redis_url})
    app.pulse.registry.prefix = f"lg{uuid.uuid4().hex[:8]}:"
    yield app
    client = app.pulse.registry.client
    for key in client.scan_iter(match=app.pulse.registry.prefix + "*"):
        client.delete(key)


@pytest.fixture
def handler(app):
    handler = task_logs.install(app, TaskLogs(app.pulse.registry), logging.INFO, ("pulse.test.extra",))
    logging.getLogger("celery.task").setLevel(logging.DEBUG)
    yield handler
    for name in ("celery.task", "pulse.test.extra"):
        logging.getLogger(name).removeHandler(handler)


@pytest.fixture
def log_events(app):
    """Reads the ``task-log`` events published so far, from the channel Celery's dispatcher uses."""
    writer = progress_writer(app)
    pubsub = app.pulse.registry.client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(wire.topic(writer.prefix, writer.patterns, writer.exchange, "task.log"))

    def read() -> list[dict]:
        events, quiet_until = [], time.monotonic() + 0.5
        while time.monotonic() < quiet_until:  # None also stands for the subscription's own reply
            if (message := pubsub.get_message(timeout=0.1)) is not None:
                events += wire.decode(message["data"])
                quiet_until = time.monotonic() + 0.5
        return events

    yield read
    pubsub.close()


def test_the_running_tasks_lines_are_kept_numbered_and_nothing_else(app, handler):
    logger = get_task_logger("pulse.test.tasks")

    @app.task(bind=True, name=f"noisy-{uuid.uuid4().hex[:6]}")
    def noisy(self, count):
        for number in range(count):
            logger.info("step %d of %s", number, "<b>markup</b>")
        logger.debug("below the level")
        logging.getLogger("pulse.test.extra").warning("from a named logger")
        logging.getLogger("pulse.test.elsewhere").error("from a logger nobody named")
        return count

    logger.info("outside any task")
    result = noisy.apply(args=(5,))
    read = TaskLogs(app.pulse.registry).read(result.id)
    assert [(line["seq"], line["level"], line["message"]) for line in read["lines"]] == [
        *((n + 1, "INFO", f"step {n} of <b>markup</b>") for n in range(5)),
        (6, "WARNING", "from a named logger")]
    assert read["lines"][0]["logger"] == "pulse.test.tasks" and read["lines"][0]["at"] > 0
    assert (read["last"], read["dropped"], read["lost"]) == (6, 0, 0)
    assert [line["seq"] for line in TaskLogs(app.pulse.registry).read(result.id, after=4)["lines"]] == [5, 6]
    assert handler.running == {}  # forgotten at the end


def test_a_record_through_two_of_the_handlers_loggers_is_kept_once(app, handler):
    logger = get_task_logger("pulse.test.tasks")

    @app.task(bind=True, name=f"twice-{uuid.uuid4().hex[:6]}")
    def twice(self):
        logger.info("once")

    logger.addHandler(handler)  # on the task's logger and on its parent, celery.task
    try:
        result = twice.apply()
    finally:
        logger.removeHandler(handler)
    assert [line["message"] for line in TaskLogs(app.pulse.registry).read(result.id)["lines"]] == ["once"]


def test_lines_are_bounded_and_the_oldest_dropped_with_a_count(app, handler):
    logger = get_task_logger("pulse.test.tasks")

    @app.task(bind=True, name=f"flood-{uuid.uuid4().hex[:6]}")
    def flood(self):
        logger.info("x" * 10_000_000)  # a 10 MB line
        logger.info(b"\x00\xff binary")
        for number in range(KEEP + 500):
            logger.info("line %d", number)

    result = flood.apply()
    read = TaskLogs(app.pulse.registry).read(result.id)
    assert len(read["lines"]) == KEEP and read["dropped"] == 502
    assert read["lines"][-1]["message"] == f"line {KEEP + 499}"
    assert all(len(line["message"]) <= LINE_LIMIT + 60 for line in read["lines"])


def test_a_long_line_is_cut_and_says_so(app, handler):
    logger = get_task_logger("pulse.test.tasks")

    @app.task(bind=True, name=f"long-{uuid.uuid4().hex[:6]}")
    def long_line(self):
        logger.info("y" * 10_000)
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("it failed")

    result = long_line.apply()
    lines = TaskLogs(app.pulse.registry).read(result.id)["lines"]
    assert lines[0]["message"].endswith(f"({10_000 - LINE_LIMIT} more characters cut)")
    assert "Traceback" in lines[1]["message"] and "ValueError: boom" in lines[1]["message"]


def test_writes_are_batched_at_most_every_quarter_second(app, handler, monkeypatch):
    writes = []
    append = TaskLogs.append
    def counted(self, *args, **kwargs):
        writes.append(len(args[1]))
        return append(self, *args, **kwargs)

    monkeypatch.setattr(TaskLogs, "append", counted)
    logger = get_task_logger("pulse.test.tasks")

    @app.task(bind=True, name=f"tight-{uuid.uuid4().hex[:6]}")
    def tight(self):
        started = time.monotonic()
        while time.monotonic() - started < 0.6:
            logger.info("tick")

    result = tight.apply()
    assert 2 <= len(writes) <= 5, writes  # the first line, then every 0.25 s, then the end
    assert TaskLogs(app.pulse.registry).read(result.id)["last"] == sum(writes)


def test_a_redis_outage_drops_lines_with_a_count_and_never_fails_the_task(app, handler, monkeypatch):
    logger = get_task_logger("pulse.test.tasks")
    calls = []

    def broken(self, *args, **kwargs):
        calls.append(1)
        raise ConnectionError("Redis is away")

    monkeypatch.setattr(TaskLogs, "append", broken)

    @app.task(bind=True, name=f"outage-{uuid.uuid4().hex[:6]}")
    def outage(self):
        for _ in range(2000):
            logger.info("while Redis is away")
        return "done"

    assert outage.apply().get() == "done"
    assert len(calls) <= 2  # paused after the first failure, tried again at the end only
    monkeypatch.undo()
    assert handler.paused_until > time.monotonic()


def test_a_full_connection_pool_delays_lines_without_losing_them(app, handler, monkeypatch):
    logger = get_task_logger("pulse.test.tasks")
    append, refused = TaskLogs.append, []

    def busy_once(self, *args, **kwargs):
        if not refused:  # more tasks writing at once than the client's pool holds (gevent, say)
            refused.append(1)
            raise redis.exceptions.MaxConnectionsError("Too many connections")
        return append(self, *args, **kwargs)

    monkeypatch.setattr(TaskLogs, "append", busy_once)

    @app.task(bind=True, name=f"crowded-{uuid.uuid4().hex[:6]}")
    def crowded(self):
        for number in range(3):
            logger.info("line %d", number)

    result = crowded.apply()
    read = TaskLogs(app.pulse.registry).read(result.id)
    assert [line["message"] for line in read["lines"]] == ["line 0", "line 1", "line 2"]
    assert (read["dropped"], read["lost"]) == (0, 0) and refused
    assert handler.paused_until < time.monotonic()  # Redis is there: nothing to pause for


def test_each_thread_keeps_its_own_tasks_lines(app, handler):
    logger = get_task_logger("pulse.test.tasks")

    @app.task(bind=True, name=f"threaded-{uuid.uuid4().hex[:6]}")
    def threaded(self, label):
        for number in range(200):
            logger.info("%s %d", label, number)
            time.sleep(0)

    results = {}
    def run(label):
        results[label] = threaded.apply(args=(label,))

    threads = [threading.Thread(target=run, args=(label,)) for label in ("a", "b", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for label, result in results.items():
        messages = [line["message"] for line in TaskLogs(app.pulse.registry).read(result.id)["lines"]]
        assert messages == [f"{label} {n}" for n in range(200)]


def test_hostile_lines_are_kept_bounded_as_text_and_the_task_is_unharmed(app, handler, monkeypatch):
    logger = get_task_logger("pulse.test.tasks")
    # Not on to pytest's own handler, which raises where logging's would print the bad call.
    monkeypatch.setattr(logging.getLogger("celery.task"), "propagate", False)

    @app.task(bind=True, name=f"hostile-{uuid.uuid4().hex[:6]}")
    def hostile(self):
        logger.info("x" * 10_000_000)  # a 10 MB line
        logger.info(b"raw \xff\x00 bytes")
        logger.info("lone \ud800 and \udcff surrogates, a NUL \x00")
        logger.info("%d items", "not a number")
        logger.info("%s", Unprintable())
        logger.info("<script>window.__xss(1)</script>")
        return "unharmed"

    result = hostile.apply()
    assert result.get() == "unharmed"
    read = TaskLogs(app.pulse.registry).read(result.id)
    assert [line["message"] for line in read["lines"]] == [
        f"{'x' * LINE_LIMIT}… ({10_000_000 - LINE_LIMIT} more characters cut)",
        "b'raw \\xff\\x00 bytes'",
        "lone \ud800 and \udcff surrogates, a NUL \x00",
        "'%d items' (unformattable: TypeError)",
        "'%s' (unformattable: RuntimeError)",
        "<script>window.__xss(1)</script>"]
    assert (read["dropped"], read["lost"]) == (0, 0)


def test_a_line_says_what_its_arguments_were_at_the_call(app, handler):
    logger = get_task_logger("pulse.test.tasks")

    @app.task(bind=True, name=f"mutable-{uuid.uuid4().hex[:6]}")
    def mutable(self):
        items = ["first"]
        logger.info("items %s", items)  # formatted at the call, not when its batch is written
        items.append("added after the call")

    result = mutable.apply()
    assert [line["message"] for line in TaskLogs(app.pulse.registry).read(result.id)["lines"]] == [
        "items ['first']"]


def test_a_task_applied_inside_another_hands_the_thread_back(app, handler):
    logger = get_task_logger("pulse.test.tasks")

    @app.task(bind=True, name=f"inner-{uuid.uuid4().hex[:6]}")
    def inner(self):
        logger.info("inner line")

    @app.task(bind=True, name=f"outer-{uuid.uuid4().hex[:6]}")
    def outer(self):
        logger.info("before")
        inner_id = inner.apply().id
        logger.info("after")
        return inner_id

    result = outer.apply()
    logs = TaskLogs(app.pulse.registry)
    assert [line["message"] for line in logs.read(result.id)["lines"]] == ["before", "after"]
    assert [line["message"] for line in logs.read(result.get())["lines"]] == ["inner line"]
    assert handler.running == {}


def test_each_batch_is_announced_once_with_its_lines_numbers_even_for_a_task_that_ran_before(
        app, handler, log_events, monkeypatch):
    logger = get_task_logger("pulse.test.tasks")
    dispatched = []  # batches announced through Celery's dispatcher, not by the lines' script
    announce = handler.announce
    monkeypatch.setattr(handler, "announce", lambda task, first, *rest: (dispatched.append(first),
                                                                          announce(task, first, *rest)))

    @app.task(bind=True, name=f"rerun-{uuid.uuid4().hex[:6]}")
    def rerun(self, label):
        logger.info("%s one", label)
        logger.info("%s two", label)

    task_id = str(uuid.uuid4())
    rerun.apply(args=("first run",), task_id=task_id)
    rerun.apply(args=("second run",), task_id=task_id)  # as a retry does: its lines follow on
    events = log_events()
    assert [(e["type"], e["uuid"], e["first"], e["last"], e["exposed"]) for e in events] == [
        ("task-log", task_id, 1, 1, False), ("task-log", task_id, 2, 2, False),
        ("task-log", task_id, 3, 3, False), ("task-log", task_id, 4, 4, False)]
    assert [line["message"] for e in events for line in e["lines"]] == [
        "first run one", "first run two", "second run one", "second run two"]
    assert all(e["hostname"] and e["clock"] and e["timestamp"] for e in events)
    assert [line["seq"] for line in TaskLogs(app.pulse.registry).read(task_id)["lines"]] == [1, 2, 3, 4]
    assert dispatched == [3]  # the second run's first batch, numbered on from the first run's


def test_a_task_exposes_its_lines_to_tokens_only_when_it_says_so(app, handler):
    logger = get_task_logger("pulse.test.tasks")

    @app.task(bind=True, name=f"public-{uuid.uuid4().hex[:6]}", pulse_expose_logs=True)
    def public(self):
        logger.info("for everyone")

    @app.task(bind=True, name=f"private-{uuid.uuid4().hex[:6]}")
    def private(self):
        logger.info("for the operator")

    registry = app.pulse.registry
    assert registry.client.hget(registry.keys.task(public.apply().id), "logs_exposed") == b"true"
    assert registry.client.hget(registry.keys.task(private.apply().id), "logs_exposed") is None


def test_a_log_event_becomes_a_numbered_packet_or_nothing():
    event = {"uuid": "t1", "first": 3, "last": 4, "lines": [{"message": "a"}, {"message": "b"}]}
    assert log_packet(event) == {"id": "t1", "first": 3, "last": 4,
                                 "lines": [{"message": "a", "seq": 3}, {"message": "b", "seq": 4}]}
    assert log_packet({**event, "lines": None})["lines"] is None  # too big: read from the API
    assert log_packet({**event, "lines": [{"message": "a"}]})["lines"] is None  # does not add up
    for bad in ({**event, "first": 0}, {**event, "last": 2}, {**event, "first": "3"}):
        assert log_packet(bad) is None
