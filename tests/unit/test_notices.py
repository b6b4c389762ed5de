"""Notices of changes that no Celery event carries, sent through the real event stream."""

import time
import uuid

from pulse.server.ingest.monitor import Monitor
from pulse.server.ingest.notices import NOTICE, Notices
from pulse.server.ingest.stream import EventStream
from pulse.server.model.store import TaskStore
from pulse.server.upkeep.maintenance import Maintenance
from tasks.celery import make_celery

from .test_monitor import make_monitor


def notice(origin: str, task_id: str = "t1", registry: str = "pulse:") -> dict:
    return {"type": NOTICE, "hostname": origin, "uuid": task_id, "registry": registry, "timestamp": 1.0}


def test_a_server_hears_the_others_notices_not_its_own_nor_another_registrys():
    app = make_celery({})
    here = Notices(app, "pulse:", origin="pulse@a")
    assert here.from_others(notice("pulse@b"))
    assert not here.from_others(notice("pulse@a"))
    assert not here.from_others(notice("pulse@b", registry="other:"))
    assert not here.from_others(notice("pulse@b", task_id="../bad id"))
    assert not here.from_others({**notice("pulse@b"), "type": "task-progress"})
    assert here.from_others({**notice("pulse@b"), "uuids": ["t1", "t2"]})
    for bad in ("t1", [], ["t1", "../bad"], ["t1"] * 101, [None]):
        assert not here.from_others({**notice("pulse@b"), "uuids": bad}), bad


def test_each_server_process_is_its_own_origin():
    app = make_celery({})
    assert Notices(app, "pulse:").origin != Notices(app, "pulse:").origin


def test_a_published_notice_makes_the_other_monitor_push_the_record_and_write_nothing(redis_url):
    app = make_celery({"REDIS_URL": redis_url})
    registry = app.pulse.registry
    registry.prefix = f"n{uuid.uuid4().hex[:8]}:"
    registry.write("t1", "skipped", fields={"name": "tasks.demo.count"})
    before = registry.client.hgetall(registry.key("t1"))
    seen: list[dict] = []
    other = Notices(app, registry.prefix)
    monitor = Monitor(app, TaskStore(registry, app), on_task=seen.append, notice=other.from_others)
    with app.connection_for_read() as conn:
        stream = EventStream(app, conn.default_channel, idle_timeout=5)
        try:
            Notices(app, registry.prefix).publish(["t1"])
            other.publish(["t1"])  # its own: ignored
            Notices(app, registry.prefix).publish([f"b{n}" for n in range(150)])  # a bulk batch
            batch = next(stream.batches())
            while len(batch) < 4:
                batch += next(stream.batches())
        finally:
            stream.close()
    assert [event["type"] for event in batch] == [NOTICE] * 4  # 150 ids: two events
    monitor.handle_batch(batch)
    assert [(task["id"], task["status"]) for task in seen][:1] == [("t1", "skipped")]
    assert [task["id"] for task in seen[1:]] == [f"b{n}" for n in range(150)]  # unknown here
    assert registry.client.hgetall(registry.key("t1")) == before


def test_of_two_servers_only_one_finds_a_task_lost_so_it_is_announced_once(redis_url):
    first = make_monitor(redis_url)
    second = Monitor(first.celery, first.store)  # the same registry, its own view of the workers
    changed: list[dict] = []
    for monitor in (first, second):
        monitor.connected, monitor.connected_since = True, time.time() - 600
    first.store.registry.write("t1", "running", fields={"state": "STARTED", "worker": "gone@host"})
    now = time.time()
    for monitor in (first, second):
        Maintenance(monitor.store, monitor, on_task=changed.append).tick(now)
    assert [(task["id"], task["status"]) for task in changed] == [("t1", "lost")]
