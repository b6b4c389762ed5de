"""The overview: throughput per minute, failure rate, queue depth and age, warnings."""

import time
import uuid

from pulse.server.model.overview import throughput, warnings


def test_throughput_covers_the_last_hour_oldest_first(app):
    registry = app.extensions["pulse_registry"]
    now = time.time()
    registry.write("a", "finished", now=now - 120)
    registry.write("b", "failed", now=now - 120)
    registry.write("c", "finished", now=now)
    rows = throughput(registry, now)
    assert len(rows) == 60 and rows[-1]["minute"] == int(now // 60) * 60
    assert rows[-1]["finished"] == 1
    assert rows[-3] == {"minute": rows[-1]["minute"] - 120, "finished": 1, "failed": 1}
    assert sum(r["finished"] + r["failed"] for r in rows[:-3]) == 0


def test_overview_answers_counts_rate_queues_and_warnings(app, client, auth_headers):
    registry = app.extensions["pulse_registry"]
    registry.write("done", "finished")
    registry.write("broken", "failed")
    queue = f"q-{uuid.uuid4().hex[:8]}"
    celery = app.extensions["pulse_celery"]
    for _ in range(3):
        celery.send_task("tasks.demo.count", queue=queue)
    time.sleep(0.2)
    data = client.get("/api/overview", headers=auth_headers).get_json()
    assert data["counts"]["by_status"]["failed"] == 1
    assert data["failure_rate"] == 0.5
    row = next(q for q in data["queues"] if q["name"] == queue)
    assert row["depth"] == 3 and row["oldest_age"] >= 0.2 and row["consumers"] is None
    assert [w["kind"] for w in data["warnings"]] == ["no_workers"]  # no worker in this database
    assert client.get("/api/overview").status_code == 401


def test_warnings_name_an_unconsumed_queue_only_when_consumers_are_known():
    rows = [{"name": "reports", "depth": 4, "consumers": []},
            {"name": "celery", "depth": 2, "consumers": ["w@h"]},
            {"name": "unknown", "depth": 9, "consumers": None}]
    found = warnings(rows, workers_online=1)
    assert [(w["kind"], w["queue"]) for w in found] == [("queue_unconsumed", "reports")]
    assert "reports has 4 waiting" in found[0]["message"]
