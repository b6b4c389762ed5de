"""Pulse with RabbitMQ as the broker: a private RabbitMQ node, the real Redis as result backend and
registry, a real prefork worker and the real server (eventlet), all subprocesses stopped by PID.

The tests run in file order: the server starts first and sees a task no worker consumes, then a
worker starts, a second server joins the first on the same broker and registry, and the last test
kills the worker.
"""

import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from subprocess import Popen

import pytest
import requests
from celery import Celery
from kombu import Connection, Consumer, Exchange, Queue

from pulse.agent.failure import TaskFailure  # noqa: F401 - imported so Celery can rebuild it
from pulse.server.ingest.receiver import ReceiverStream
from pulse.server.model.amqp_queues import amqp_depths

from ..conftest import Stack, db_url, flush_db, own_server, own_worker, wait_until
from .test_two_servers import actions_reach_both, both_push_live

pytestmark = pytest.mark.integration

# Every one of Redis's 16 databases is some test's already; this one is shared with test_launcher,
# which runs in the same session one module at a time: flushed before and after.
AMQP_DB = 2
LOST_AFTER = 3.0
WORKER = "amqpworker"


@pytest.fixture(scope="module")
def redis_db(redis_url) -> Iterator[str]:
    url = db_url(redis_url, AMQP_DB)
    flush_db(url)
    yield url
    flush_db(url)


@pytest.fixture(scope="module")
def amqp_stack(redis_db, rabbitmq_url) -> Iterator[Stack]:
    with own_server(redis_db, "web-amqp", BROKER_URL=rabbitmq_url, PULSE_ASYNC_MODE="eventlet",
                    PULSE_LOST_AFTER=str(LOST_AFTER), PULSE_MAINTENANCE_INTERVAL="0.5",
                    PULSE_WORKER_CHECK_INTERVAL="1") as (_proc, stack):
        yield stack


@pytest.fixture(scope="module")
def amqp_worker(amqp_stack) -> Iterator[Popen]:
    # Every progress call sent (as for the two servers on Redis): each one is a history point.
    with own_worker(amqp_stack.redis_url, WORKER, concurrency=2, PULSE_PROGRESS_INTERVAL="0",
                    BROKER_URL=amqp_stack.env["BROKER_URL"]) as proc:
        wait_until(lambda: [w for w in workers(amqp_stack) if w["online"]], 20, 0.2,
                   "the server to hear the worker")
        yield proc


@pytest.fixture(scope="module")
def second_amqp_stack(amqp_stack) -> Iterator[Stack]:
    """Another server on the same RabbitMQ node and Redis database as ``amqp_stack``."""
    with own_server(amqp_stack.redis_url, "web-amqp-b", BROKER_URL=amqp_stack.env["BROKER_URL"],
                    PULSE_ASYNC_MODE="eventlet") as (_proc, stack):
        yield stack


def workers(stack: Stack) -> list[dict]:
    listed = stack.api("GET", "/api/workers").json()["workers"]
    return [w for w in listed if w["hostname"].startswith(f"{WORKER}@")]


def get(stack: Stack, task_id: str) -> dict:
    return stack.api("GET", f"/api/tasks/{task_id}").json()


# -- amqp_depths against the real broker --------------------------------------------------------

def test_amqp_depths_counts_waiting_messages_and_consumers(rabbitmq_url):
    app = Celery("depths", broker=rabbitmq_url)
    exchange = Exchange("pulse-depths", type="direct")
    waiting, watched = (Queue(f"pulse-depths-{n}", exchange, routing_key=f"pulse-depths-{n}")
                        for n in ("waiting", "watched"))
    try:
        with Connection(rabbitmq_url) as conn:
            producer = conn.Producer()
            for _ in range(3):
                producer.publish({"n": 1}, exchange=exchange, routing_key=waiting.routing_key,
                                 declare=[waiting])
            with Consumer(conn.channel(), queues=[watched], callbacks=[lambda body, msg: None]):
                # A missing queue before and between real ones: each 404 closes the channel,
                # and the queues after it are still read on a fresh one.
                depths = amqp_depths(app, ["pulse-depths-missing", waiting.name, "pulse-depths-gone",
                                           watched.name])
            assert depths == {"pulse-depths-missing": (0, 0), waiting.name: (3, 0),
                              "pulse-depths-gone": (0, 0), watched.name: (0, 1)}
            # A passive declare creates nothing.
            assert amqp_depths(app, ["pulse-depths-missing"]) == {"pulse-depths-missing": (0, 0)}
            waiting(conn.channel()).delete()
            watched(conn.channel()).delete()
    finally:
        app.close()
    assert amqp_depths(app, []) == {}


def test_the_receiver_stream_hands_waiting_events_over_in_batches(rabbitmq_url):
    """On RabbitMQ the monitor reads Celery's receiver in batches (one registry pipeline each):
    one event at a time it kept up with under half of Flower's rate (bench, ingest on RabbitMQ)."""
    app = Celery("batches", broker=rabbitmq_url)
    with app.connection_for_read() as conn:
        stream = ReceiverStream(app, conn, idle_timeout=5.0, max_batch=100)
        try:
            with app.events.default_dispatcher(hostname="bench@here") as dispatcher:
                for n in range(300):
                    dispatcher.send("task-progress", uuid=f"t-{n}", current=n)
            got: list[list[dict]] = []
            for batch in stream.batches():
                got.append([e for e in batch if e["type"] == "task-progress"])
                if sum(len(b) for b in got) >= 300:
                    break
        finally:
            stream.close()
    events = [e for batch in got for e in batch]
    assert [e["uuid"] for e in events] == [f"t-{n}" for n in range(300)]  # all, in order, once
    assert all(len(batch) <= 100 for batch in got) and len(got) <= 30  # batches, not 300 single events
    assert all(isinstance(e["local_received"], float) for e in events)  # localised by Celery's receiver


def test_amqp_depths_gives_up_quickly_on_an_unreachable_broker():
    from pulse import devstack

    app = Celery("depths", broker=f"amqp://guest:guest@127.0.0.1:{devstack.free_port()}//")
    started = time.monotonic()
    try:
        assert amqp_depths(app, ["celery"], timeout=1.0) == {}
    finally:
        app.close()
    assert time.monotonic() - started < 10


# -- the server alone: nothing consumes yet -----------------------------------------------------

def test_healthz_says_the_monitor_is_connected_to_rabbitmq(amqp_stack):
    data = requests.get(amqp_stack.base_url + "/healthz", timeout=5).json()
    assert data["monitor"]["connected"] is True, data
    assert data["redis"]["ok"] is True, data


def test_a_task_sent_while_no_worker_consumes_is_scheduled(amqp_stack):
    task_id = amqp_stack.launch("tasks.demo.count", total=1, delay=0.01)
    assert amqp_stack.wait_for(task_id, "scheduled", timeout=10)["status"] == "scheduled"
    time.sleep(1.0)
    assert get(amqp_stack, task_id)["status"] == "scheduled"
    default = amqp_stack.celery.conf.task_default_queue
    assert amqp_depths(amqp_stack.celery, [default])[default] == (1, 0)
    # The overview reads the same depth through the server (no oldest age on AMQP).
    rows = {row["name"]: row for row in amqp_stack.api("GET", "/api/overview").json()["queues"]}
    assert rows[default]["depth"] == 1 and rows[default]["oldest_age"] is None


# -- with a worker ------------------------------------------------------------------------------

def test_progress_arrives_live_and_the_task_finishes(amqp_stack, amqp_worker):
    client = amqp_stack.socket()
    pushes: list[dict] = []
    lock = threading.Lock()

    def record(data: dict) -> None:
        with lock:
            pushes.append(data)

    client.on("task", record)
    try:
        task_id = amqp_stack.launch("tasks.demo.count", total=20, delay=0.1)
        ack = client.call("subscribe", {"task": task_id}, timeout=10)
        assert ack["task"]["id"] == task_id and ack["task"]["status"] in ("scheduled", "running")
        wait_until(lambda: any(t["id"] == task_id and t["status"] == "finished" for t in list(pushes)),
                   30, what="the finished push")
    finally:
        client.disconnect()
    updates = [t for t in pushes if t["id"] == task_id]
    percents = [t["progress"]["percent"] for t in updates if t["progress"] and t["status"] == "running"]
    assert len(percents) >= 3, updates
    assert percents == sorted(percents) and 0 < percents[0] < 100
    final = updates[-1]
    assert final["state"] == "SUCCESS" and final["result"] == 20
    assert final["progress"]["percent"] == 100.0
    assert final["worker"].startswith(f"{WORKER}@")
    assert get(amqp_stack, task_id)["result"] == 20


def test_the_task_sent_before_any_worker_ran_once_one_came(amqp_stack, amqp_worker):
    default = amqp_stack.celery.conf.task_default_queue
    wait_until(lambda: amqp_depths(amqp_stack.celery, [default]).get(default, (None,))[0] == 0, 20, 0.2,
               "the waiting task to be taken")
    assert amqp_depths(amqp_stack.celery, [default])[default][1] >= 1  # the worker consumes it


def test_a_structured_failure_shows_its_details(amqp_stack, amqp_worker):
    task_id = amqp_stack.launch("tasks.demo.fail_with_details", step=2, delay=0.2)
    data = amqp_stack.wait_for(task_id, "failed")
    assert data["state"] == "FAILURE"
    assert data["failure"]["exc_type"] == "ValueError"
    assert data["failure"]["exc_message"] == "record 2 could not be parsed"
    assert data["failure"]["details"]["step"] == 2
    assert data["failure"]["details"]["hint"] == "check the CSV export settings"
    assert data["worker"].startswith(f"{WORKER}@")


def test_a_goal_launched_twice_gives_the_same_task(amqp_stack, amqp_worker):
    goal = f"amqp-{uuid.uuid4().hex[:8]}"
    body = {"name": "tasks.demo.count", "kwargs": {"total": 10, "delay": 0.1}, "goal": goal}
    first = amqp_stack.api("POST", "/api/tasks", json=body)
    assert first.status_code == 202, first.text
    assert first.json()["started"] is True and first.json()["goal"] == goal
    task_id = first.json()["id"]

    same = amqp_stack.api("POST", "/api/tasks", json=body)
    assert same.status_code == 200 and same.json()["started"] is False, same.text
    assert same.json()["id"] == task_id and same.json()["status"] in ("scheduled", "running")
    assert same.headers["Location"] == f"/api/tasks/{task_id}"

    finished = amqp_stack.wait_for(task_id, "finished")
    assert finished["goal"] == goal and finished["result"] == 10
    done = amqp_stack.api("POST", "/api/tasks", json=body)
    assert done.status_code == 200 and done.json()["id"] == task_id and done.json()["status"] == "finished"
    current = amqp_stack.api("GET", f"/api/goals/{goal}").json()
    assert current["goal"] == goal and current["task"]["id"] == task_id
    launches = [e for e in amqp_stack.api("GET", "/api/audit").json()["entries"]
                if e["action"] == "launch" and e["task"] == task_id]
    assert len(launches) == 1, launches  # one task, launched once


def test_two_servers_on_one_broker_both_push_a_tasks_progress_live(amqp_stack, second_amqp_stack,
                                                                    amqp_worker):
    both_push_live(amqp_stack, second_amqp_stack, delay=0.15)


def test_an_action_on_one_server_reaches_the_clients_of_the_other_over_rabbitmq(
        amqp_stack, second_amqp_stack, amqp_worker):
    """No worker event follows a skip, nor a revoke of a task nobody consumes: the other server
    hears of them only through the ``pulse-changed`` notice on Celery's event exchange."""
    first, second = amqp_stack, second_amqp_stack
    failing = first.launch("tasks.demo.fail_with_details", step=1, delay=0.01)
    first.wait_for(failing, "failed")
    nobody = f"pulse-nobody-{uuid.uuid4().hex[:8]}"
    waiting = first.celery.send_task("tasks.demo.count", kwargs={"total": 1}, queue=nobody).id
    try:
        first.wait_for(waiting, "scheduled")
        actions_reach_both(first, second, failing, waiting)
    finally:
        with Connection(first.env["BROKER_URL"], connect_timeout=5) as conn:
            conn.default_channel.queue_delete(nobody)  # the revoked message with it
    entries = second.api("GET", "/api/audit").json()["entries"]
    assert Counter((e["action"], e["task"]) for e in entries if e["task"] in (failing, waiting)) == {
        ("launch", failing): 1, ("skip", failing): 1, ("revoke", waiting): 1}


def test_the_tasks_of_a_killed_worker_become_lost(amqp_stack, amqp_worker):
    """Runs last: it kills the module's worker."""
    busy = [amqp_stack.launch("tasks.demo.count", total=60, delay=0.1) for _ in range(2)]
    for task_id in busy:
        def progressed(task_id=task_id) -> bool:
            return (get(amqp_stack, task_id)["progress"] or {}).get("current", 0) >= 2

        wait_until(progressed, 20, 0.1, f"task {task_id} to report progress")
    os.killpg(amqp_worker.pid, signal.SIGKILL)
    amqp_worker.wait(10)
    for task_id in busy:
        lost = amqp_stack.wait_for(task_id, "lost", timeout=LOST_AFTER + 15)
        assert lost["can_replay"] is True
        assert lost["progress"]["current"] < 60
