"""The queues API against real processes: a server (eventlet) on a real Redis, tasks sent to a queue
no worker consumes, a peek that leaves them where they were, purge with its audit entry, the refusals;
then a server and a worker on RabbitMQ: depths and consumers, no peek, purge with its count."""

import time
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import redis

from ..conftest import Stack, db_url, flush_db, fresh_server, own_server, own_worker, producer_app, wait_until
from .test_openapi import assert_documented

pytestmark = pytest.mark.integration

# Shared with test_cli, test_access_matrix and test_connection_limits, each flushing it first.
DB = 11
# Shared with test_rabbitmq, which flushes it first too.
AMQP_DB = 2
VIEWER = "queues-viewer-token-0123456789"
PRIORITY_KEYS = ("", "\x06\x163", "\x06\x166", "\x06\x169")


@pytest.fixture(scope="module")
def queues_stack(redis_url) -> Iterator[Stack]:
    with fresh_server(redis_url, DB, "web-queues", PULSE_VIEWER_TOKEN=VIEWER) as stack:
        yield stack


def fresh_queue() -> str:
    return f"q-{uuid.uuid4().hex[:8]}"


def everything_in(stack: Stack, name: str) -> list[list[bytes]]:
    broker = redis.Redis.from_url(stack.redis_url)
    try:
        return [broker.lrange(name + suffix, 0, -1) for suffix in PRIORITY_KEYS]
    finally:
        broker.close()


def row(stack: Stack, name: str, token: str | None = "") -> dict:
    answer = stack.api("GET", "/api/queues", token=token)
    assert answer.status_code == 200, answer.text
    assert_documented("GET", "/api/queues", answer)
    return next(q for q in answer.json()["queues"] if q["name"] == name)


def test_waiting_tasks_are_listed_peeked_in_order_left_in_place_and_purged(queues_stack):
    stack, name = queues_stack, fresh_queue()
    with producer_app(stack.env) as app:
        ids = [app.send_task("tasks.demo.count", args=[n, "<b>bold</b>"], kwargs={"total": n}, queue=name).id
               for n in range(3)]
        later = app.send_task("tasks.demo.count", kwargs={"total": 9}, queue=name, countdown=3600).id
    time.sleep(0.3)

    listed = row(stack, name)
    assert listed["depth"] == 4 and listed["oldest_age"] >= 0.3
    assert listed["consumers"] in (None, []) and listed["peek"] is True and listed["broker"] == "redis"

    before = everything_in(stack, name)
    answer = stack.api("GET", f"/api/queues/{name}/messages", params={"limit": 3})
    assert answer.status_code == 200, answer.text
    peeked = assert_documented("GET", "/api/queues/{name}/messages", answer)
    assert peeked["depth"] == 4 and [m["id"] for m in peeked["messages"]] == ids  # the order workers take
    first = peeked["messages"][0]
    assert first["name"] == "tasks.demo.count" and first["args"] == "[0, '<b>bold</b>']"
    assert first["kwargs"] == "{'total': 0}" and first["age"] >= 0.3 and first["eta"] is None
    everything = stack.api("GET", f"/api/queues/{name}/messages", params={"limit": 100}).json()["messages"]
    assert [m["id"] for m in everything] == [*ids, later]
    assert everything[-1]["eta"] == pytest.approx(time.time() + 3600, abs=60)
    assert everything_in(stack, name) == before  # the same messages, in the same order

    reason = "a bad deploy queued duplicates <script>"
    purged = stack.api("POST", f"/api/queues/{name}/purge", json={"reason": reason})
    assert purged.status_code == 200, purged.text
    assert assert_documented("POST", "/api/queues/{name}/purge", purged)["purged"] == 4
    assert everything_in(stack, name) == [[], [], [], []]
    assert row(stack, name)["depth"] == 0
    entry = stack.api("GET", "/api/audit", params={"limit": 1}).json()["entries"][0]
    assert entry["action"] == "purge-queue" and entry["task"] == name
    assert entry["who"].startswith("operator (token) from 127.0.0.1")
    assert entry["detail"] == {"queue": name, "broker": "redis", "reason": reason, "purged": 4}


def test_a_viewer_reads_everything_and_purges_nothing(queues_stack):
    stack, name = queues_stack, fresh_queue()
    with producer_app(stack.env) as app:
        app.send_task("tasks.demo.count", queue=name)
    assert row(stack, name, token=VIEWER)["depth"] == 1
    assert stack.api("GET", f"/api/queues/{name}/messages", token=VIEWER).status_code == 200
    refused = stack.api("POST", f"/api/queues/{name}/purge", token=VIEWER, json={"reason": "try"})
    assert refused.status_code == 403, refused.text
    assert_documented("POST", "/api/queues/{name}/purge", refused)
    assert row(stack, name)["depth"] == 1
    assert stack.api("GET", "/api/queues", token=None).status_code == 401
    assert stack.api("POST", f"/api/queues/{name}/purge", token=None, json={"reason": "x"}).status_code == 401


@pytest.mark.parametrize("body", [None, {}, {"reason": ""}, {"reason": "   "}, {"reason": 42},
                                  {"reason": "r" * 501}, ["reason"]])
def test_a_purge_without_a_reason_is_answered_400_and_purges_nothing(queues_stack, body):
    stack, name = queues_stack, fresh_queue()
    with producer_app(stack.env) as app:
        app.send_task("tasks.demo.count", queue=name)
    answer = stack.api("POST", f"/api/queues/{name}/purge", **({} if body is None else {"json": body}))
    assert answer.status_code == 400, answer.text
    assert "reason" in assert_documented("POST", "/api/queues/{name}/purge", answer)["error"]
    assert row(stack, name)["depth"] == 1


@pytest.mark.parametrize("name", ["bad\x01name", "line\nfeed", "nel\x85", "q" * 201, "x" * 10_240])
@pytest.mark.parametrize(("method", "suffix"), [("GET", "messages"), ("POST", "purge")])
def test_hostile_queue_names_are_answered_400(queues_stack, name, method, suffix):
    answer = queues_stack.api(method, f"/api/queues/{quote(name, safe='')}/{suffix}", json={"reason": "x"})
    assert answer.status_code == 400, answer.text[:300]
    body = assert_documented(method, f"/api/queues/{{name}}/{suffix}", answer)
    assert "1-200 characters" in body["error"]


def test_a_name_with_markup_is_a_queue_like_any_other_and_comes_back_as_data(queues_stack):
    stack = queues_stack
    name = f'<img src=x onerror="alert(1)">/{uuid.uuid4().hex[:6]}'
    with producer_app(stack.env) as app:
        app.send_task("tasks.demo.count", queue=name)
    assert row(stack, name)["depth"] == 1
    peeked = stack.api("GET", f"/api/queues/{quote(name, safe='')}/messages")
    assert peeked.status_code == 200 and peeked.headers["Content-Type"].startswith("application/json")
    assert peeked.json()["name"] == name and len(peeked.json()["messages"]) == 1
    unknown = stack.api("GET", f"/api/queues/{quote(name + 'x', safe='')}/messages")
    assert unknown.status_code == 404 and unknown.headers["Content-Type"].startswith("application/json")
    purged = stack.api("POST", f"/api/queues/{quote(name, safe='')}/purge", json={"reason": "markup"})
    assert purged.json()["purged"] == 1


@pytest.mark.parametrize("limit", ["0", "101", "-5", "10000000000000000000000", "2.5", "NaN", "", "ten"])
def test_absurd_limits_are_answered_400(queues_stack, limit):
    answer = queues_stack.api("GET", "/api/queues/celery/messages", params={"limit": limit})
    assert answer.status_code == 400, answer.text
    assert "limit" in assert_documented("GET", "/api/queues/{name}/messages", answer)["error"]


def test_an_unknown_queue_is_answered_404(queues_stack):
    for method, suffix in (("GET", "messages"), ("POST", "purge")):
        answer = queues_stack.api(method, f"/api/queues/nobody-sent-here/{suffix}", json={"reason": "x"})
        assert answer.status_code == 404, answer.text
        assert_documented(method, f"/api/queues/{{name}}/{suffix}", answer)


def test_the_queues_a_worker_consumes_list_it_as_consumer(stack):
    # The session stack: its worker consumes the default queue.
    def consumers() -> list[str] | None:
        return row(stack, "celery")["consumers"]

    found = wait_until(lambda: [w for w in consumers() or [] if w.startswith("worker@")], 30, 0.5,
                       "the worker to be listed as the default queue's consumer")
    assert found


# -- RabbitMQ ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def amqp_queues_stack(redis_url, rabbitmq_url) -> Iterator[Stack]:
    url = db_url(redis_url, AMQP_DB)
    flush_db(url)
    with own_server(url, "web-queues-amqp", BROKER_URL=rabbitmq_url, PULSE_WORKER_CHECK_INTERVAL="1") \
            as (_proc, stack):
        with own_worker(url, "queuesamqp", BROKER_URL=rabbitmq_url):
            yield stack
    flush_db(url)


def test_on_rabbitmq_depth_and_consumers_are_listed_peek_is_refused_and_purge_counts(amqp_queues_stack):
    stack, name = amqp_queues_stack, fresh_queue()
    with producer_app(stack.env) as app:
        for n in range(3):
            app.send_task("tasks.demo.count", kwargs={"total": n}, queue=name)

    listed = wait_until(lambda: row(stack, name)["depth"] == 3 and row(stack, name), 20, 0.3,
                        "the queue's depth from RabbitMQ")
    assert listed["broker"] == "amqp" and listed["peek"] is False and listed["oldest_age"] is None
    default = wait_until(lambda: [w for w in row(stack, "celery")["consumers"] or []
                                  if w.startswith("queuesamqp@")], 20, 0.5, "the worker as consumer")
    assert default

    peek = stack.api("GET", f"/api/queues/{name}/messages")
    assert peek.status_code == 409, peek.text
    error = assert_documented("GET", "/api/queues/{name}/messages", peek)["error"]
    assert "peek unavailable on amqp" in error and "takes it out of the queue" in error
    assert row(stack, name)["depth"] == 3  # the refusal touched nothing

    purged = stack.api("POST", f"/api/queues/{name}/purge", json={"reason": "stale reports"})
    assert purged.status_code == 200, purged.text
    assert assert_documented("POST", "/api/queues/{name}/purge", purged)["purged"] == 3
    assert row(stack, name)["depth"] == 0
    entry = stack.api("GET", "/api/audit", params={"limit": 1}).json()["entries"][0]
    assert entry["detail"] == {"queue": name, "broker": "amqp", "reason": "stale reports", "purged": 3}
