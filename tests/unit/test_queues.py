"""The queues model and API in-process: the order of a peek across kombu's priority lists, what a
message decodes to (and what does not decode), purge, and the refusals."""

import base64
import json
import pickle
import time
import uuid

import pytest
import redis

from pulse.server.model.queues import PRIORITY_KEYS, broker_kind, decode, valid_name
from tests.conftest import demo_server

from ..conftest import TOKEN

VIEWER = "unit-viewer-token-0123456789"


@pytest.fixture
def queue(app):
    """A queue name of this test's own, its lists deleted afterwards."""
    name = f"uq-{uuid.uuid4().hex[:8]}"
    yield name
    app.extensions["pulse_broker"].delete(*(name + suffix for suffix in PRIORITY_KEYS))


def lists(app, name: str) -> list[list[bytes]]:
    broker = app.extensions["pulse_broker"]
    return [broker.lrange(name + suffix, 0, -1) for suffix in PRIORITY_KEYS]


def test_a_peek_lists_messages_in_the_order_workers_take_them_and_moves_none(app, client, auth_headers,
                                                                           queue):
    celery = app.extensions["pulse_celery"]
    sent = [celery.send_task("tasks.demo.count", args=[n], kwargs={"total": n}, queue=queue,
                             priority=priority).id for n, priority in enumerate([0, 5, 0, 9, 3])]
    celery.send_task("tasks.demo.count", kwargs={"total": 1}, queue=queue, countdown=600)
    before = lists(app, queue)
    answer = client.get(f"/api/queues/{queue}/messages?limit=100", headers=auth_headers)
    assert answer.status_code == 200, answer.text
    data = answer.get_json()
    # The queue's own list first, oldest first (priorities 0-2, the countdown task too), then 3-5, then 9.
    assert [m["id"] for m in data["messages"][:2]] == [sent[0], sent[2]]
    assert [m["priority_step"] for m in data["messages"]] == [0, 0, 0, 1, 1, 3]
    assert [m["id"] for m in data["messages"][3:]] == [sent[1], sent[4], sent[3]]
    assert data["depth"] == 6 and data["limit"] == 100 and data["broker"] == "redis"
    first = data["messages"][0]
    assert (first["name"], first["args"], first["kwargs"]) == ("tasks.demo.count", "[0]", "{'total': 0}")
    assert first["position"] == 0 and first["age"] is not None and first["age"] >= 0
    assert first["undecodable"] is False and first["eta"] is None
    countdown = data["messages"][2]
    assert countdown["eta"] == pytest.approx(time.time() + 600, abs=30)
    assert lists(app, queue) == before  # nothing taken, nothing moved
    # A limit cuts the same order short.
    two = client.get(f"/api/queues/{queue}/messages?limit=2", headers=auth_headers).get_json()
    assert [m["id"] for m in two["messages"]] == [sent[0], sent[2]] and two["depth"] == 6


def test_what_does_not_decode_is_shown_as_undecodable_never_an_error(app, client, auth_headers, queue):
    broker = app.extensions["pulse_broker"]
    registry = app.extensions["pulse_registry"]
    registry.client.sadd(registry.keys.queues, queue)  # a queue Pulse knows, filled by hand below
    pickled = {"body": base64.b64encode(pickle.dumps(([1], {}, {}))).decode(), "content-encoding": "binary",
               "content-type": "application/x-python-serialize",
               "headers": {"task": "evil.task", "id": "p-1", "argsrepr": None, "kwargsrepr": None},
               "properties": {"body_encoding": "base64"}}
    protocol1 = {"body": base64.b64encode(json.dumps(
        {"task": "old.task", "id": "v1-1", "args": [1, "<b>"], "kwargs": {}, "eta": None}).encode()).decode(),
        "content-type": "application/json", "headers": {}, "properties": {"body_encoding": "base64"}}
    for raw in [b"not json at all", b"\xff\xfe", json.dumps([1, 2]), "[" * 100_000, json.dumps(pickled),
                json.dumps(protocol1)]:
        broker.lpush(queue, raw)  # as kombu does: the first pushed is the first a worker takes
    data = client.get(f"/api/queues/{queue}/messages", headers=auth_headers).get_json()
    messages = data["messages"]
    assert [m["undecodable"] for m in messages] == [True, True, True, True, False, False]
    assert all(m["note"] for m in messages[:4]) and messages[3]["size"] == 100_000
    assert (messages[4]["name"], messages[4]["id"], messages[4]["args"]) == ("evil.task", "p-1", None)
    assert "application/x-python-serialize" in messages[4]["note"]  # never unpickled
    assert (messages[5]["name"], messages[5]["args"]) == ("old.task", "[1, '<b>']")


def test_decode_bounds_what_a_hostile_producer_put_in_the_headers():
    message = json.dumps({"body": "", "content-type": "application/json", "properties": {},
                          "headers": {"task": "x" * 10_000, "id": ["not", "a", "string"],
                                      "argsrepr": "a" * 50_000, "kwargsrepr": {"k": 1},
                                      "eta": "not a time", "expires": "9999-12-31T23:59:59+00:00",
                                      "retries": 10 ** 30}})
    data = decode(message)
    assert len(data["name"]) == 255 and data["name"].endswith("...")
    assert data["id"] == "['not', 'a', 'string']" and len(data["args"]) == 2048
    assert data["kwargs"] == "{'k': 1}" and data["eta"] is None and data["retries"] is None
    assert data["expires"] == pytest.approx(253402300799.0)
    json.dumps(data, allow_nan=False)


def test_purge_deletes_every_priority_list_and_is_audited(app, client, auth_headers, queue):
    celery = app.extensions["pulse_celery"]
    for priority in (0, 0, 4, 9):
        celery.send_task("tasks.demo.count", queue=queue, priority=priority)
    assert client.post(f"/api/queues/{queue}/purge", headers=auth_headers, json={}).status_code == 400
    assert client.post(f"/api/queues/{queue}/purge", headers=auth_headers,
                       json={"reason": " \t\n"}).status_code == 400
    assert client.post(f"/api/queues/{queue}/purge", headers=auth_headers,
                       json={"reason": "x" * 501}).status_code == 400
    assert client.post(f"/api/queues/{queue}/purge", headers=auth_headers, data="reason=x").status_code == 400
    answer = client.post(f"/api/queues/{queue}/purge", headers=auth_headers, json={"reason": "duplicates"})
    assert answer.status_code == 200, answer.text
    assert answer.get_json()["purged"] == 4 and answer.get_json()["name"] == queue
    assert lists(app, queue) == [[], [], [], []]
    entry = client.get("/api/audit?limit=1", headers=auth_headers).get_json()["entries"][0]
    assert (entry["action"], entry["task"]) == ("purge-queue", queue)
    assert entry["who"] == "operator (token) from 127.0.0.1"
    assert entry["detail"] == {"queue": queue, "broker": "redis", "reason": "duplicates", "purged": 4}
    again = client.post(f"/api/queues/{queue}/purge", headers=auth_headers, json={"reason": "again"})
    assert again.get_json()["purged"] == 0


def test_a_key_of_another_type_is_neither_peeked_nor_deleted(app, client, auth_headers, queue):
    broker = app.extensions["pulse_broker"]
    registry = app.extensions["pulse_registry"]
    registry.client.sadd(registry.keys.queues, queue)
    broker.set(queue + PRIORITY_KEYS[2], "precious")
    assert client.get(f"/api/queues/{queue}/messages", headers=auth_headers).status_code == 409
    assert client.post(f"/api/queues/{queue}/purge", headers=auth_headers,
                       json={"reason": "test"}).status_code == 409
    assert broker.get(queue + PRIORITY_KEYS[2]) == b"precious"


def test_the_list_shows_every_known_queue_with_its_depth(app, client, auth_headers, queue):
    app.extensions["pulse_celery"].send_task("tasks.demo.count", queue=queue)
    data = client.get("/api/queues", headers=auth_headers).get_json()
    assert data["broker"] == "redis"
    rows = {row["name"]: row for row in data["queues"]}
    assert rows[queue]["depth"] == 1 and rows[queue]["peek"] is True and rows[queue]["broker"] == "redis"
    assert "celery" in rows  # the default queue, always


@pytest.mark.parametrize("path", ["/api/queues/{q}/messages?limit=0", "/api/queues/{q}/messages?limit=101",
                                  "/api/queues/{q}/messages?limit=abc", "/api/queues/{q}/messages?limit=-1",
                                  "/api/queues/{q}/messages?limit=1e3", "/api/queues/a%01b/messages",
                                  "/api/queues/a%0Ab/messages", "/api/queues/a%C2%85b/messages",
                                  "/api/queues/" + "q" * 201 + "/messages"])
def test_malformed_names_and_limits_are_answered_400(client, auth_headers, queue, path):
    answer = client.get(path.format(q=queue), headers=auth_headers)
    assert answer.status_code == 400, answer.text
    assert set(answer.get_json()) == {"error"}


def test_unknown_queues_are_answered_404(client, auth_headers):
    for answer in (client.get("/api/queues/never-seen/messages", headers=auth_headers),
                   client.post("/api/queues/never-seen/purge", headers=auth_headers, json={"reason": "x"})):
        assert answer.status_code == 404 and "never-seen" in answer.get_json()["error"]


def test_a_viewer_reads_and_cannot_purge(redis_url, queue, app):
    viewer_app = demo_server({"PULSE_TOKEN": TOKEN, "PULSE_VIEWER_TOKEN": VIEWER, "REDIS_URL": redis_url,
                              "PULSE_ASYNC_MODE": "threading", "PULSE_AUTH_ATTEMPTS": "100000",
                              "PULSE_REGISTRY_PREFIX": app.extensions["pulse_registry"].prefix})
    app.extensions["pulse_celery"].send_task("tasks.demo.count", queue=queue)
    client, headers = viewer_app.test_client(), {"Authorization": f"Bearer {VIEWER}"}
    assert client.get("/api/queues", headers=headers).status_code == 200
    assert client.get(f"/api/queues/{queue}/messages", headers=headers).status_code == 200
    assert client.post(f"/api/queues/{queue}/purge", headers=headers, json={"reason": "x"}).status_code == 403
    assert redis.Redis.from_url(redis_url).llen(queue) == 1


def test_names_and_brokers():
    assert valid_name("reports") and valid_name("<b>x</b>") and valid_name("a/b") and valid_name("q" * 200)
    assert not any(valid_name(name) for name in ("", "q" * 201, "a\x7fb", "a\x85b", None))

    class App:
        class conf:  # noqa: N801 - stands for Celery's app.conf
            broker_url = "amqp://guest@localhost//"

    assert broker_kind(App) == "amqp"
    App.conf.broker_url = "rediss://x"
    assert broker_kind(App) == "redis"
    App.conf.broker_url = "sqs://"
    assert broker_kind(App) == "sqs"
