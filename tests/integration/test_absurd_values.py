"""Tasks that report absurd values: stored and answered bounded and sane, and the monitor lives on.

A worker running the hostile tasks (tests/hostile_tasks.py) and a web server of the test's own,
on Redis database 9 (the session worker must not take these tasks). Every value a task hands
over goes through the real worker, Redis and monitor; the test reads what the registry stored and
what the API answers.
"""

import json
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
from kombu.exceptions import EncodeError

from pulse import devstack
from tasks.celery import make_celery
from tests.hostile_tasks import RELEASE_KEY, nested, progress_cases

from ..conftest import ARTIFACTS, Stack, db_url, flush_db, own_server, producer_app, server_env, wait_until

pytestmark = pytest.mark.integration

HOSTILE_DB = 9
# The most a task's registry record or its API answer may take (see README, "The task JSON"):
# result 16 KiB + failure (type 200 + message 16 KiB + traceback 16 KiB + details 64 KiB) +
# args and kwargs 2 KiB each + a progress message of 1,000 + 50 history points, and the rest.
RECORD_LIMIT = 128 * 1024
TEXT_LIMIT = 16_384
SERVER_LOG = "web-absurd"
# What the server log must never say while hostile tasks run.
MONITOR_TROUBLE = ("Traceback", "event stream lost", "was not written", "could not handle event")


@contextmanager
def hostile_stack(url: str, name: str, log_name: str, server_log: str) -> Iterator[Stack]:
    """A worker of the hostile tasks named ``name@<host>`` and a web server, both on ``url``."""
    flush_db(url)
    env = server_env(url, 0, PULSE_PROGRESS_INTERVAL="0")
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / f"{log_name}.log", "w") as log:
        # Threads: the held tasks of a test all run at once, at little cost.
        proc = devstack.start_worker(env, concurrency=24, log=log, name=name, pool="threads",
                                     app="tests.hostile_tasks")
        try:
            app = make_celery(env)
            try:
                def answers() -> bool:
                    replies = app.control.ping(timeout=0.5)
                    return any(host.startswith(f"{name}@") for reply in replies for host in reply)

                wait_until(lambda: proc.poll() is not None or answers(), 60, 0.2, f"worker {log_name}")
            finally:
                app.close()
            assert proc.poll() is None, f"the hostile worker exited; see test-artifacts/{log_name}.log"
            with own_server(url, server_log) as (_proc, stack):
                yield stack
        finally:
            devstack.stop(proc)


@pytest.fixture(scope="module")
def stack(redis_url) -> Iterator[Stack]:
    with hostile_stack(db_url(redis_url, HOSTILE_DB), "absurd", "worker-absurd", SERVER_LOG) as running:
        yield running


@pytest.fixture(scope="module")
def producer(stack) -> Iterator:
    with producer_app(stack.env) as app:
        yield app


@pytest.fixture(scope="module")
def client(stack) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(stack.redis_url)
    yield connection
    connection.close()


def record_size(client: redis.Redis, task_id: str) -> int:
    """Bytes of a task's registry record (its hash and its progress history)."""
    fields = client.hgetall(f"pulse:t:{task_id}")
    history = client.lrange(f"pulse:h:{task_id}", 0, -1)
    return sum(len(k) + len(v) for k, v in fields.items()) + sum(len(p) for p in history)


def answer(stack: Stack, client: redis.Redis, task_id: str) -> dict:
    """The task's API answer, after checking it and its registry record are bounded."""
    response = stack.api("GET", f"/api/tasks/{task_id}")
    assert response.status_code == 200, response.text
    assert len(response.content) <= RECORD_LIMIT, f"{task_id}: API answer of {len(response.content)} bytes"
    assert record_size(client, task_id) <= RECORD_LIMIT, f"{task_id}: registry record too big"
    return response.json()


def finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def assert_sane_progress(task: dict) -> None:
    progress = task["progress"]
    assert progress is not None, task["id"]
    assert finite(progress["current"]) and progress["current"] >= 0, progress
    assert progress["total"] is None or (finite(progress["total"]) and progress["total"] > 0), progress
    assert progress["percent"] is None or 0 <= progress["percent"] <= 100, progress
    assert progress["message"] is None or len(progress["message"]) <= 1000, progress
    assert all(finite(t) and finite(c) and c >= 0 for t, c in task["history"]), task["history"]


def assert_monitor_healthy(stack: Stack) -> None:
    """/healthz says connected, a plain task still flows, and the monitor never stumbled."""
    health = stack.api("GET", "/healthz").json()
    assert health["monitor"]["connected"] is True, health
    later = stack.launch("tasks.demo.count", total=2, delay=0.01)
    assert stack.wait_for(later, "finished")["progress"]["percent"] == 100.0
    log = (ARTIFACTS / f"{SERVER_LOG}.log").read_text(errors="replace")
    assert not [line for line in log.splitlines() if any(word in line for word in MONITOR_TROUBLE)]


# (current, total, percent) each case reads while its task runs; messages are checked apart.
EXPECTED = {
    "negative": (0, 10, 0.0),
    "nan": (0, None, None),
    "inf": (0, 10, 0.0),
    "minus_inf": (0, None, None),
    "strings": (0, None, None),
    "none": (0, None, None),
    "above_total": (250, 100, 100.0),
    "total_zero": (5, None, None),
    "total_negative": (5, None, None),
    "huge_int": (0, None, None),
    "tiny_total": (1, 5e-324, 100.0),
    "huge_message": (1, 2, 50.0),
    "unprintable": (0, None, None),
    "bytes_message": (1, 2, 50.0),
    "sequence": (5, 10, 50.0),
}


def test_absurd_progress_is_stored_and_answered_sane(stack, producer, client):
    assert set(EXPECTED) == set(progress_cases())
    ids = {case: producer.send_task("hostile.progress", args=[case]).id for case in EXPECTED}

    def reported(task_id: str) -> dict | None:
        task = stack.api("GET", f"/api/tasks/{task_id}").json()
        return task if task["status"] == "running" and task["progress"] is not None else None

    for case, task_id in ids.items():
        task = wait_until(lambda task_id=task_id: reported(task_id), 30, 0.1, f"case {case} to report")
        task = answer(stack, client, task_id)
        assert_sane_progress(task)
        progress = task["progress"]
        assert (progress["current"], progress["total"], progress["percent"]) == EXPECTED[case], case
    messages = {case: answer(stack, client, task_id)["progress"]["message"] for case, task_id in ids.items()}
    assert messages["huge_message"] == "m" * 1000
    assert messages["unprintable"] == "<unprintable Unprintable>"
    assert messages["bytes_message"].startswith("b'\\xff\\x00") and len(messages["bytes_message"]) == 1000
    assert messages["none"] is None
    sequence = answer(stack, client, ids["sequence"])
    assert [c for _t, c in sequence["history"]] == [1, 0, 0, 50, 1e308, 5]

    client.set(RELEASE_KEY, 1)
    try:
        for case, task_id in ids.items():
            stack.wait_for(task_id, "finished")
            task = answer(stack, client, task_id)
            assert_sane_progress(task)
            assert task["progress"]["percent"] == 100.0, case
    finally:
        client.delete(RELEASE_KEY)
    assert_monitor_healthy(stack)


def test_absurd_results_are_stored_bounded(stack, producer, client):
    cases = ("huge", "wide", "deep_ok", "deep", "circular", "set", "object", "nan", "bytes", "huge_int",
             "big_int")
    ids = {case: producer.send_task("hostile.result", args=[case]).id for case in cases}
    for task_id in ids.values():
        stack.wait_for(task_id, "finished", "failed", timeout=60)
    tasks = {case: answer(stack, client, task_id) for case, task_id in ids.items()}
    huge = tasks["huge"]["result"]
    assert tasks["huge"]["status"] == "finished"
    assert huge["truncated"] is True and huge["size"] > TEXT_LIMIT and huge["preview"].startswith('"rrr')
    assert len(json.dumps(huge)) <= TEXT_LIMIT
    assert tasks["wide"]["result"] == [*range(500), "... 1999500 more"]
    deep = tasks["deep_ok"]["result"]
    assert tasks["deep_ok"]["status"] == "finished"
    assert json.dumps(deep).count("[") <= 13 and "..." in json.dumps(deep)
    assert tasks["nan"]["result"] == ["nan", "inf", "-inf"]
    assert tasks["bytes"]["result"] == repr(b"\xff\x00" * 10)
    assert tasks["big_int"]["result"] == "<int of 101 bits>"
    # Celery's JSON serializer refuses these: the task fails with its EncodeError, sanely told.
    for case in ("deep", "circular", "set", "object", "huge_int"):
        failure = tasks[case]["failure"]
        assert tasks[case]["status"] == "failed" and failure["exc_type"] == "EncodeError", (case, failure)
        assert len(failure["exc_message"]) <= TEXT_LIMIT and len(failure["traceback"]) <= TEXT_LIMIT
    assert_monitor_healthy(stack)


def test_giant_and_odd_failures_are_stored_bounded(stack, producer, client):
    huge = producer.send_task("hostile.raise_huge", args=[2_000_000]).id
    giant = producer.send_task("hostile.fail_giant").id
    odd = producer.send_task("hostile.fail_odd").id
    for task_id in (huge, giant, odd):
        stack.wait_for(task_id, "failed", timeout=60)
    failure = answer(stack, client, huge)["failure"]
    assert failure["exc_type"] == "ValueError" and failure["exc_message"].startswith("eee")
    assert len(failure["exc_message"]) <= TEXT_LIMIT and len(failure["traceback"]) <= TEXT_LIMIT

    failure = answer(stack, client, giant)["failure"]
    assert failure["exc_type"] == "T" * 200 and failure["exc_message"] == "f" * 1000
    assert failure["details"]["truncated"] is True and len(json.dumps(failure["details"])) <= 65_536
    assert producer.AsyncResult(giant).state == "FAILURE"

    failure = answer(stack, client, odd)["failure"]
    assert failure["exc_type"] == failure["exc_message"] == "<unprintable Unprintable>"
    details = failure["details"]
    assert details["step"] == 3 and details["things"] == [1, 2, 3] and details["nan"] == "nan"
    assert details["unprintable"] == "<unrepresentable Unprintable>"
    assert details["bigint"].startswith("<int of ") and "..." in json.dumps(details["loop"])
    assert json.dumps(details["deep"]).count("[") <= 13
    assert_monitor_healthy(stack)


def test_a_gigantic_exception_text_keeps_the_monitor_listening(stack, producer, client):
    """20 MB of exception text: Celery's task-failed event would carry 40 MB, over Redis's pub/sub
    buffer, and Redis would drop the monitor's subscription. The worker sends it bounded."""
    def failed_events() -> float:
        text = stack.api("GET", "/metrics").text
        found = re.search(r'^pulse_events_received_total\{type="task-failed"\} ([0-9.e+]+)$', text, re.M)
        return float(found[1]) if found else 0.0

    before = failed_events()
    task_id = producer.send_task("hostile.raise_huge", args=[20_000_000]).id
    stack.wait_for(task_id, "failed", timeout=60)
    wait_until(lambda: failed_events() > before, 10, what="the task-failed event")
    failure = answer(stack, client, task_id)["failure"]
    assert failure["exc_message"].startswith("eee") and len(failure["traceback"]) <= TEXT_LIMIT
    assert_monitor_healthy(stack)


def test_gigantic_and_deep_arguments(stack, producer, client):
    big = producer.send_task("hostile.swallow", args=["a" * 20_000_000], kwargs={"k": "k" * 5_000_000}).id
    deep = producer.send_task("hostile.swallow", args=[nested(600)]).id
    for task_id in (big, deep):
        stack.wait_for(task_id, "finished", timeout=60)
        task = answer(stack, client, task_id)
        assert len(task["args"]) <= 2048 and len(task["kwargs"]) <= 2048
    # Too deep for JSON: the send itself fails, and Pulse records nothing for it.
    with pytest.raises(EncodeError):
        producer.send_task("hostile.swallow", args=[nested(5000)], task_id="too-deep-1")
    assert stack.api("GET", "/api/tasks/too-deep-1").json()["status"] == "unknown"
    assert_monitor_healthy(stack)
