"""A worker's pool process frees the garbage that failed tasks leave (tasks/collect.py).

Celery builds an ``ExceptionInfo`` for every crash and every ``fail()`` (its ``Ignore``); each is
a reference cycle that only a full collection frees. A real prefork worker with one pool process
runs failing tasks, then counts the ``ExceptionInfo`` objects its process still holds: with
Pulse's collection off they pile up, with it on only the ones since the last collection remain.
"""

import pytest

from pulse.server.model.results import read_meta

from ..conftest import db_url, flush_db, own_worker, producer_app, server_env, wait_until

pytestmark = pytest.mark.integration

GARBAGE_DB = 14
FAILURES = 30  # of each kind


def succeeded(app, task_id: str) -> dict | None:
    meta = read_meta(app, task_id)
    return meta if meta and meta["status"] == "SUCCESS" else None


def held_exception_infos(url: str, interval: str) -> int:
    """Run FAILURES crashes and FAILURES fail() calls on a fresh worker; count what it still holds."""
    flush_db(url)
    with own_worker(url, f"garbage{interval.replace('.', '')}", concurrency=1, app="tests.probe_tasks",
                    PULSE_WORKER_GC_INTERVAL=interval, PULSE_PROGRESS_INTERVAL="0"):
        with producer_app(server_env(url, 0)) as app:
            sent = [app.send_task("tasks.demo.crash") for _ in range(FAILURES)]
            sent += [app.send_task("tasks.demo.fail_with_details", kwargs={"step": 1, "delay": 0})
                     for _ in range(FAILURES)]
            probe = app.send_task("probe.exception_infos")
            meta = wait_until(lambda: succeeded(app, probe.id), 60, 0.1, "the probe's result")
            assert all(read_meta(app, result.id)["status"] == "FAILURE" for result in sent)
            return meta["result"]


def test_failed_tasks_leave_no_garbage_behind_with_the_collection_on(redis_url):
    url = db_url(redis_url, GARBAGE_DB)
    piled_up = held_exception_infos(url, "0")
    collected = held_exception_infos(url, "0.01")
    assert piled_up >= FAILURES  # without the collection, Celery's garbage stays (the test can fail)
    assert collected <= 4, f"{collected} ExceptionInfo objects outlived their tasks"
