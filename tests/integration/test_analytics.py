"""Runtime analytics against real processes: a worker runs tasks of known durations (sleeps), then
GET /api/analytics and /metrics must agree with each other and with the records' own times, and a
second server on the same Redis must export the very same figures."""

from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pulse.record.analytics import BOUNDS
from pulse.server.model.analytics import quantile

from ..conftest import Stack, db_url, fresh_server, own_server, own_worker
from .test_openapi import assert_documented

pytestmark = pytest.mark.integration

DB = 5  # this module's own, and tests/browser/test_analytics_page.py's: each flushes it first
COUNT, FAIL = "tasks.demo.count", "tasks.demo.fail_with_details"


@pytest.fixture(scope="module")
def analytics_stack(redis_url) -> Iterator[Stack]:
    with fresh_server(redis_url, DB, "web-analytics") as stack, \
            own_worker(db_url(redis_url, DB), "analyticsworker", concurrency=2):
        yield stack


def scrape(stack: Stack) -> str:
    response = stack.api("GET", "/metrics")
    assert response.status_code == 200, response.text
    return response.text


def analytics_lines(text: str) -> list[str]:
    return sorted(line for line in text.splitlines() if line.startswith("pulse_task_"))


def samples(text: str, family: str, **labels: str) -> dict[tuple[str, str | None], float]:
    """(sample name, le) -> value of ``family``'s samples whose labels include ``labels``."""
    out = {}
    for metric in text_string_to_metric_families(text):
        if metric.name == family:
            for sample in metric.samples:
                if labels.items() <= sample.labels.items():
                    out[(sample.name, sample.labels.get("le"))] = sample.value
    return out


def bucket_counts(histogram: dict[tuple[str, str | None], float], family: str) -> list[int]:
    """The per-bucket (not cumulative) counts of a scraped histogram, in the order of BOUNDS."""
    cumulative = [histogram[(f"{family}_bucket", le)] for le in [*(str(float(b)) for b in BOUNDS), "+Inf"]]
    return [int(c - (cumulative[i - 1] if i else 0)) for i, c in enumerate(cumulative)]


def test_tasks_of_known_durations_agree_in_the_api_and_in_metrics(analytics_stack, redis_url):
    stack = analytics_stack
    # Five at once on two worker processes: some wait in the queue.
    counted = [stack.launch(COUNT, total=4, delay=0.1) for _ in range(3)]
    failed = [stack.launch(FAIL, step=1, delay=0.6) for _ in range(2)]
    records = [stack.wait_for(task_id, "finished") for task_id in counted]
    records += [stack.wait_for(task_id, "failed") for task_id in failed]
    for record in records:  # the sleeps set a floor; a loaded 2-core machine sets no ceiling we trust
        assert record["finished_at"] - record["started_at"] >= (0.4 if record["name"] == COUNT else 0.6)

    response = stack.api("GET", "/api/analytics", params={"window": 3600})
    body = assert_documented("GET", "/api/analytics", response)
    rows = {row["name"]: row for row in body["names"]}
    assert set(rows) == {COUNT, FAIL}
    count, fail = rows[COUNT], rows[FAIL]
    assert (count["count"], count["succeeded"], count["failed"], count["failure_rate"]) == (3, 3, 0, 0.0)
    assert (fail["count"], fail["succeeded"], fail["failed"], fail["failure_rate"]) == (2, 0, 2, 1.0)
    assert count["runtime"]["count"] == fail["runtime"]["count"] + 1 == 3
    assert 0.25 < count["runtime"]["p50"] <= 5.0 and 0.5 < fail["runtime"]["p50"] <= 5.0
    assert count["runtime"]["p50"] <= count["runtime"]["p90"] <= count["runtime"]["p99"]
    assert count["queue_wait"]["count"] + fail["queue_wait"]["count"] == 5
    assert all(0 <= row["queue_wait"][q] <= 30 for row in (count, fail) for q in ("p50", "p90", "p99"))
    day = stack.api("GET", "/api/analytics", params={"window": 86400}).json()
    assert {row["name"]: row["count"] for row in day["names"]} == {COUNT: 3, FAIL: 2}

    text = scrape(stack)
    outcomes = {(s.labels["name"], s.labels["queue"], s.labels["status"]): s.value
                for metric in text_string_to_metric_families(text) if metric.name == "pulse_task_outcomes"
                for s in metric.samples}
    assert {key: value for key, value in outcomes.items() if value} == {
        (COUNT, "celery", "finished"): 3, (FAIL, "celery", "failed"): 2}
    assert outcomes[(COUNT, "celery", "lost")] == 0  # exported from 0, so increase() sees a first loss
    for name, row in ((COUNT, count), (FAIL, fail)):
        for family, figures in (("pulse_task_runtime_seconds", row["runtime"]),
                                ("pulse_task_queue_wait_seconds", row["queue_wait"])):
            histogram = samples(text, family, name=name, queue="celery")
            buckets = bucket_counts(histogram, family)
            assert buckets == figures["buckets"], (name, family)  # the same buckets, all time and this hour
            assert histogram[(f"{family}_count", None)] == figures["count"]
            for q in (0.5, 0.9, 0.99):  # as histogram_quantile would estimate from this scrape
                assert quantile(q, buckets) == pytest.approx(figures[f"p{round(q * 100)}"], abs=1e-6)
        # The sum is the records' own runtimes (Celery's measure when its event came first).
        measured = sum(r["finished_at"] - r["started_at"] for r in records if r["name"] == name)
        runtime = samples(text, "pulse_task_runtime_seconds", name=name)
        assert runtime[("pulse_task_runtime_seconds_sum", None)] == pytest.approx(measured, abs=0.5)

    # Another server on the same Redis (or this one after a restart) exports the same numbers.
    with own_server(db_url(redis_url, DB), "web-analytics-2") as (_proc, other):
        assert analytics_lines(scrape(other)) == analytics_lines(scrape(stack)) != []
        assert other.api("GET", "/api/analytics").json()["names"] == stack.api(
            "GET", "/api/analytics").json()["names"]
