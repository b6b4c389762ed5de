"""The event stream read straight from Redis pub/sub, against events Celery's own dispatcher sends."""

import json
import threading
import time

import pytest
import redis

from pulse.agent import wire
from pulse.server.ingest.stream import EventStream, StreamSilent
from tasks.celery import make_celery


@pytest.fixture
def app(redis_url):
    return make_celery({"REDIS_URL": redis_url})


def test_batches_hold_what_celerys_dispatcher_sent(app, redis_url):
    with app.connection_for_read() as conn:
        stream = EventStream(app, conn.default_channel, idle_timeout=2, max_batch=3)
        try:
            with app.events.default_dispatcher(hostname="w@h") as dispatcher:
                for number in range(5):
                    dispatcher.send("task-progress", uuid="t1", current=number)
            prefix, patterns = wire.topic_prefix(app)
            stray = wire.topic(prefix, patterns, app.conf.event_exchange, "task.progress")
            redis.Redis.from_url(redis_url).publish(stray, b"not an event")
            time.sleep(0.2)
            batches = stream.batches()
            first, second = next(batches), next(batches)
        finally:
            stream.close()
    assert [len(first), len(second)] == [3, 2]  # max_batch, then the rest (the stray one dropped)
    assert [e["current"] for e in first + second] == [0, 1, 2, 3, 4]
    event = first[0]
    assert (event["type"], event["uuid"], event["hostname"]) == ("task-progress", "t1", "w@h")
    assert event["local_received"] >= event["timestamp"] - 1  # localised as Celery's receiver does
    assert stream.undecodable == 1


def test_a_redis_that_answers_nothing_ends_the_stream(app, redis_url):
    with app.connection_for_read() as conn:
        stream = EventStream(app, conn.default_channel, idle_timeout=1)
        try:
            # Every client's commands wait, the stream's ping too: a frozen Redis, for a while.
            redis.Redis.from_url(redis_url).client_pause(3000)
            started = time.monotonic()
            with pytest.raises(StreamSilent):
                next(stream.batches())
        finally:
            stream.close()
    assert time.monotonic() - started < 3


def test_a_quiet_stream_stays_open_while_redis_answers_its_ping(app):
    """No worker, no event: the stream pings, and the pong keeps it from being taken for dead."""
    with app.connection_for_read() as conn:
        stream = EventStream(app, conn.default_channel, idle_timeout=1)
        stopper = threading.Timer(3, stream.stop)  # three idle timeouts
        stopper.start()
        try:
            assert list(stream.batches()) == []
        finally:
            stopper.cancel()
            stream.close()


def test_decode_refuses_what_is_not_a_json_event():
    for data in (b"{}", b"[1]", b'{"content-type": "application/x-python-serialize", "body": ""}'):
        with pytest.raises(ValueError):
            wire.decode(data)


def test_decode_reads_any_key_order_the_same():
    body = {"type": "task-progress", "uuid": "t1", "hostname": "w@h", "timestamp": 1.0, "current": 2}
    _key, usual = wire.encode(body, "celeryev")
    envelope = json.loads(usual)
    reordered = json.dumps(dict(reversed(list(envelope.items())))).encode()
    assert not reordered.startswith(b'{"body"')
    assert wire.decode(usual) == wire.decode(reordered) == [body]


def test_events_that_are_not_json_are_left_to_celerys_receiver(app):
    app.conf.event_serializer = "msgpack"
    with app.connection_for_read() as conn, pytest.raises(wire.UnsupportedBroker):
        EventStream(app, conn.default_channel)
