"""Live task logs, worker side: the running task's lines captured, batched, bounded and numbered
(real Redis; tasks run in-process with ``apply``, which sets Celery's current task as a worker does)."""

import logging
import threading
import time
import uuid

import pytest
from celery.utils.log import get_task_logger

from pulse.agent import logs as task_logs
from pulse.record.logs import KEEP, LINE_LIMIT, TaskLogs
from pulse.server.push.live import log_packet
from tasks.celery import make_celery


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
    assert handler.pending == {}  # forgotten at the end


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
