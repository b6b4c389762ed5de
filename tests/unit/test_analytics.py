"""Runtime analytics: what the write script counts when a record ends (buckets per minute, hour and
in the totals), what ``Analytics`` reads back (windows, percentiles, outcomes), the name and queue
caps, hostile names, and the same figures in /metrics and GET /api/analytics. Real Redis, synthetic
writes through the registry."""

import re
import time
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pulse.record.analytics import BOUNDS, HOUR_TTL, LABEL_LIMIT, MINUTE_TTL, NAME_CAP, QUEUE_CAP
from pulse.record.scripts import script
from pulse.server.model.analytics import Analytics, cover, quantile

NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC: minute 28333333, hour 472222
MINUTE, HOUR = int(NOW // 60), int(NOW // 3600)


def run(registry, name: str = "job", runtime: float = 0.3, wait: float = 0.05, end: float = NOW,
        status: str = "finished", queue: str | None = "celery", task_id: str | None = None, **fields) -> str:
    """A task's record written as the producer and the worker write it: sent, started, ended."""
    task_id = task_id or uuid.uuid4().hex
    started = end - runtime
    sent = started - wait
    registry.write(task_id, "scheduled", fields={"name": name, "queue": queue, **fields},
                   fill={"sent_at": sent}, now=sent)
    registry.write(task_id, "running", fields={"started_at": started}, now=started)
    registry.write(task_id, status, fields={"finished_at": end}, now=end)
    return task_id


def hash_of(registry, key: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in registry.client.hgetall(key).items()}


def bucket_of(seconds: float) -> int:
    return next((i + 1 for i, bound in enumerate(BOUNDS) if seconds <= bound), len(BOUNDS) + 1)


# What the write script keeps


def test_a_finished_task_counts_in_its_minute_its_hour_and_the_totals(registry):
    run(registry, runtime=0.3, wait=0.05)
    keys, r, w = registry.keys, bucket_of(0.3), bucket_of(0.05)
    expected = {"ofinished\x1fjob": "1", f"r{r}\x1fjob": "1", f"w{w}\x1fjob": "1"}
    assert hash_of(registry, keys.analytics_minute(MINUTE)) == expected
    assert hash_of(registry, keys.analytics_hour(HOUR)) == expected
    totals = hash_of(registry, keys.analytics_totals)
    assert {k: v for k, v in totals.items() if k[0] in "orw"} == {
        "ofinished\x1fcelery\x1fjob": "1", f"r{r}\x1fcelery\x1fjob": "1", f"w{w}\x1fcelery\x1fjob": "1"}
    assert float(totals["R\x1fcelery\x1fjob"]) == pytest.approx(0.3, abs=1e-6)
    assert float(totals["W\x1fcelery\x1fjob"]) == pytest.approx(0.05, abs=1e-6)
    assert MINUTE_TTL - 5 < registry.client.ttl(keys.analytics_minute(MINUTE)) <= MINUTE_TTL
    assert HOUR_TTL - 5 < registry.client.ttl(keys.analytics_hour(HOUR)) <= HOUR_TTL
    assert registry.client.ttl(keys.analytics_totals) == -1  # counters: they never expire
    assert registry.client.smembers(keys.analytics_names) == {b"job"}
    assert registry.client.smembers(keys.analytics_queues) == {b"celery"}


@pytest.mark.parametrize("seconds", [0.0, 0.001, 0.0011, 0.25, 1.0, 9999.0, 10000.0, 10000.5, 86400.0])
def test_a_value_counts_in_the_first_bucket_whose_bound_it_does_not_exceed(registry, seconds):
    # Prometheus's le: a value equal to a bound is in that bound's bucket.
    run(registry, runtime=seconds, wait=0)
    fields = hash_of(registry, registry.keys.analytics_minute(MINUTE))
    assert fields[f"r{bucket_of(seconds)}\x1fjob"] == "1"
    assert [f for f in fields if f.startswith("r")] == [f"r{bucket_of(seconds)}\x1fjob"]


def test_each_record_counts_once_per_status_it_ends_in(registry):
    analytics = Analytics(registry)
    done = run(registry, "job")
    # The worker's signal and the monitor's event both report the finish: the second only fills gaps.
    registry.write(done, "finished", fields={"finished_at": NOW + 1, "runtime": 0.3}, now=NOW + 1)
    registry.write(done, "expired", now=NOW + 2)  # a later verdict, not an outcome
    failed = run(registry, "job", status="failed")
    registry.write(failed, "replayed", now=NOW + 2)
    registry.write(failed, "failed", now=NOW + 3)  # a late duplicate: refused by the lifecycle
    # A task marked lost, that later turns out to have finished: it ended both ways.
    lost = run(registry, "job", status="lost")
    registry.write(lost, "finished", fields={"finished_at": NOW}, now=NOW + 4)
    # Revoked while waiting, and a chain step abandoned: no runtime, no wait.
    registry.write("revoked-1", "scheduled", fields={"name": "job", "queue": "celery"}, now=NOW - 1)
    registry.write("revoked-1", "revoked", fields={"finished_at": NOW}, now=NOW)
    registry.write("step-1", "unstarted", fill={"name": "job"}, now=NOW - 1)
    registry.write("step-1", "abandoned", fields={"finished_at": NOW}, now=NOW)

    assert analytics.outcomes("job", 3600, NOW + 5) == {
        "finished": 2, "failed": 1, "revoked": 1, "lost": 1, "abandoned": 1}
    (job,) = analytics.summary(3600, NOW + 5)
    assert (job["name"], job["count"], job["succeeded"], job["failed"]) == ("job", 6, 2, 1)
    assert job["runtime"]["count"] == 3 and job["queue_wait"]["count"] == 3
    assert job["failure_rate"] == pytest.approx(1 / 3, abs=1e-6)


def test_the_reindexing_of_an_older_record_counts_nothing(registry):
    task_id = run(registry, "old.job", end=NOW - 3 * 86400)
    for key in registry.client.scan_iter(match=registry.prefix + "an:*"):
        registry.client.delete(key)  # as if it had ended before the analytics existed
    registry.write(task_id, fields={"reindex": "1"}, now=NOW)
    assert list(registry.client.scan_iter(match=registry.prefix + "an:*")) == []


def test_the_queue_wait_of_a_retry_or_an_eta_task_is_not_counted(registry):
    run(registry, "job", retries=1)
    run(registry, "job", eta="2023-11-14T22:00:00+00:00")
    run(registry, "job")
    (job,) = Analytics(registry).summary(3600, NOW)
    assert (job["runtime"]["count"], job["queue_wait"]["count"]) == (3, 1)


def test_celery_s_own_runtime_is_preferred_to_the_clock_difference(registry):
    task_id = uuid.uuid4().hex
    registry.write(task_id, "running", fields={"name": "job", "started_at": NOW - 100}, now=NOW - 100)
    registry.write(task_id, "finished", fields={"finished_at": NOW, "runtime": 0.002}, now=NOW)
    fields = hash_of(registry, registry.keys.analytics_minute(MINUTE))
    assert fields[f"r{bucket_of(0.002)}\x1fjob"] == "1"
    assert not any(f.startswith("w") for f in fields)  # never sent through a producer Pulse knows


def test_a_clock_skew_counts_as_zero_not_as_a_negative_time(registry):
    task_id = uuid.uuid4().hex
    registry.write(task_id, "scheduled", fields={"name": "job"}, fill={"sent_at": NOW + 5}, now=NOW)
    registry.write(task_id, "running", fields={"started_at": NOW}, now=NOW)
    registry.write(task_id, "finished", fields={"finished_at": NOW - 1}, now=NOW)
    fields = hash_of(registry, registry.keys.analytics_minute(MINUTE))
    assert fields["r1\x1fjob"] == "1" and fields["w1\x1fjob"] == "1"


def test_the_write_script_spells_the_analytics_keys_as_keys_does(registry):
    run(registry)
    keys = registry.keys
    for key in (keys.analytics_minute(MINUTE), keys.analytics_hour(HOUR), keys.analytics_totals,
                keys.analytics_names, keys.analytics_queues):
        assert registry.client.exists(key), key


def test_the_write_script_and_record_analytics_agree_on_every_constant():
    lua = script("write.lua")
    bounds = re.search(r"local BOUNDS = \{([^}]*)\}", lua).group(1)
    assert tuple(float(b) for b in bounds.split(",")) == BOUNDS
    assert f"label(new[3], prefix .. 'an:names', {NAME_CAP})" in lua
    assert f"label(new[5], prefix .. 'an:queues', {QUEUE_CAP})" in lua
    assert f"#value > {LABEL_LIMIT}" in lua
    assert f"redis.call('EXPIRE', mkey, {MINUTE_TTL})" in lua
    assert f"redis.call('EXPIRE', hkey, {HOUR_TTL})" in lua
    assert list(BOUNDS) == sorted(BOUNDS)


# Windows and percentiles


@pytest.mark.parametrize("window", [1, 59, 60, 61, 300, 3599, 3600, 3601, 7200, 86399, 86400])
@pytest.mark.parametrize("offset", [0, 1, 59, 61, 3599, 3600 - 60, 1800.5])
def test_the_hours_and_minutes_read_hold_exactly_the_window(window, offset):
    now = 1_699_999_200 + offset  # 1_699_999_200 starts an hour
    hours, minutes = cover(window, now)
    last = int(now // 60)
    wanted = set(range(last - max(1, -(-window // 60)) + 1, last + 1))
    read = set(minutes) | {m for hour in hours for m in range(hour * 60, hour * 60 + 60)}
    assert read == wanted and len(read) == len(minutes) + 60 * len(hours)  # no minute read twice
    assert len(minutes) < 60 * 2 and len(hours) <= 24 and len(minutes) + len(hours) <= 83


def test_the_windows_keep_the_last_hour_and_the_last_day(registry):
    analytics = Analytics(registry)
    run(registry, end=NOW - 10)            # this minute
    run(registry, end=NOW - 30 * 60)       # half an hour ago
    run(registry, end=NOW - 2 * 3600)      # two hours ago
    run(registry, end=NOW - 23.5 * 3600)   # yesterday, still in the day
    run(registry, end=NOW - 25 * 3600)     # more than a day ago
    run(registry, end=NOW + 120)           # a writer whose clock runs ahead: not yet
    assert analytics.outcomes("job", 60, NOW)["finished"] == 1
    assert analytics.outcomes("job", 3600, NOW)["finished"] == 2
    assert analytics.outcomes("job", 3 * 3600, NOW)["finished"] == 3
    assert analytics.outcomes("job", 86400, NOW)["finished"] == 4
    assert [r["count"] for r in analytics.summary(3600, NOW)] == [2]
    assert [r["count"] for r in analytics.summary(86400, NOW)] == [4]
    assert analytics.outcomes("nobody", 86400, NOW) == dict.fromkeys(
        ("finished", "failed", "revoked", "lost", "abandoned"), 0)
    with pytest.raises(ValueError, match="at most 86400"):
        analytics.outcomes("job", 86401, NOW)
    with pytest.raises(ValueError, match="above 0"):
        analytics.summary(0, NOW)


def test_outcomes_take_one_round_trip(registry, monkeypatch):
    run(registry)
    analytics = Analytics(registry)
    calls = []
    real = registry.client.pipeline
    monkeypatch.setattr(registry.client, "pipeline", lambda **kw: calls.append(kw) or real(**kw))
    assert analytics.outcomes("job", 86400, NOW)["finished"] == 1
    assert len(calls) == 1


def test_quantiles_are_estimated_within_buckets_as_prometheus_does():
    counts = [0] * (len(BOUNDS) + 1)
    assert quantile(0.5, counts) is None
    counts[BOUNDS.index(0.5)] = 10  # ten values in (0.25, 0.5]
    assert quantile(0.5, counts) == pytest.approx(0.375)
    assert quantile(0.9, counts) == pytest.approx(0.475)
    counts[0] = 10  # ten more in [0, 0.001]
    assert quantile(0.25, counts) == pytest.approx(0.0005)
    assert quantile(0.5, counts) == pytest.approx(0.001)  # the rank falls on the first bucket's top
    counts[-1] = 80  # most above the last bound: Prometheus answers the highest bound
    assert quantile(0.99, counts) == BOUNDS[-1]


def test_percentiles_of_known_runtimes(registry):
    for i in range(100):
        run(registry, runtime=0.3 if i < 90 else 3.0, wait=0.02, end=NOW - i)
    (job,) = Analytics(registry).summary(3600, NOW)
    runtime, wait = job["runtime"], job["queue_wait"]
    assert runtime["count"] == wait["count"] == 100
    assert 0.25 < runtime["p50"] <= 0.5 and 0.25 < runtime["p90"] <= 0.5 and 2.5 < runtime["p99"] <= 5.0
    assert 0.01 < wait["p50"] <= 0.025 and 0.01 < wait["p99"] <= 0.025
    assert sum(runtime["buckets"]) == 100 and len(runtime["buckets"]) == len(BOUNDS) + 1


# Bounded labels, hostile names


def test_names_past_the_cap_count_as_other(registry):
    analytics = Analytics(registry)
    for i in range(NAME_CAP + 5):
        run(registry, f"job.{i:03d}", end=NOW - i % 50)
    names = {row["name"]: row for row in analytics.summary(3600, NOW)}
    assert len(names) == NAME_CAP + 1
    assert names["other"]["count"] == 5 and "job.204" not in names and "job.199" in names
    assert analytics.label("job.000") == "job.000" and analytics.label("job.204") == "other"
    assert analytics.outcomes("other", 3600, NOW)["finished"] == 5
    assert registry.client.scard(registry.keys.analytics_names) == NAME_CAP
    # Once kept, a name stays kept: its series never changes label.
    run(registry, "job.000")
    assert analytics.outcomes("job.000", 3600, NOW)["finished"] == 2


def test_queues_past_the_cap_count_as_other(registry):
    for i in range(QUEUE_CAP + 3):
        run(registry, "job", queue=f"q{i}")
    run(registry, "job", queue=None)
    totals = Analytics(registry).totals()
    queues = {queue for (_name, queue) in totals}
    assert len(queues) == QUEUE_CAP + 2 and "other" in queues and "unknown" in queues
    assert totals[("job", "other")].outcomes == {"finished": 3}


def test_hostile_names_are_kept_verbatim_or_counted_as_other(registry):
    analytics = Analytics(registry)
    markup = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    unicode = "tâche.\u202e\u200bévalue\u2028ß\U0001f600"
    huge = "x" * 10_240
    for name in (markup, unicode, huge, "a\x1fb", "other", LABEL_LIMIT * "é"):
        run(registry, name)
    names = {row["name"]: row["count"] for row in analytics.summary(3600, NOW)}
    assert names == {markup: 1, unicode: 1, "other": 4}  # 10 KB, the separator, "other", 400 bytes
    assert analytics.label(huge) == "other" and analytics.label(unicode) == unicode
    assert analytics.label(None) == "unknown"


# The same figures over HTTP


@pytest.fixture
def app_registry(app):
    registry = app.extensions["pulse_registry"]
    yield registry
    for key in registry.client.scan_iter(match=registry.prefix + "*"):
        registry.client.delete(key)


def test_metrics_export_the_totals_as_counters_and_histograms(client, auth_headers, app_registry):
    for runtime in (0.003, 0.3, 0.3, 30.0):
        run(app_registry, "tasks.a<b>", runtime=runtime, wait=0.5, end=NOW)
    run(app_registry, "tasks.a<b>", status="failed", queue="slow")
    run(app_registry, "tasks.a<b>", status="lost", queue="slow")
    response = client.get("/metrics", headers=auth_headers)
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.get_data(as_text=True))}
    outcomes = {(s.labels["name"], s.labels["queue"], s.labels["status"]): s.value
                for s in families["pulse_task_outcomes"].samples}
    # Every outcome of a name and queue that has any, zeros included (increase() needs a start).
    assert {key: value for key, value in outcomes.items() if value} == {
        ("tasks.a<b>", "celery", "finished"): 4, ("tasks.a<b>", "slow", "failed"): 1,
        ("tasks.a<b>", "slow", "lost"): 1}
    assert len(outcomes) == 2 * 5 and outcomes[("tasks.a<b>", "celery", "lost")] == 0
    runtime = {(s.name, s.labels.get("queue"), s.labels.get("le")): s.value
               for s in families["pulse_task_runtime_seconds"].samples}
    assert runtime[("pulse_task_runtime_seconds_count", "celery", None)] == 4
    assert runtime[("pulse_task_runtime_seconds_sum", "celery", None)] == pytest.approx(30.603, abs=1e-4)
    assert runtime[("pulse_task_runtime_seconds_bucket", "celery", "0.005")] == 1
    assert runtime[("pulse_task_runtime_seconds_bucket", "celery", "0.5")] == 3
    assert runtime[("pulse_task_runtime_seconds_bucket", "celery", "25.0")] == 3
    assert runtime[("pulse_task_runtime_seconds_bucket", "celery", "+Inf")] == 4
    assert runtime[("pulse_task_runtime_seconds_count", "slow", None)] == 1  # the failed one ran
    wait = {(s.name, s.labels.get("queue")): s.value
            for s in families["pulse_task_queue_wait_seconds"].samples if not s.name.endswith("_bucket")}
    assert wait[("pulse_task_queue_wait_seconds_count", "celery")] == 4
    assert wait[("pulse_task_queue_wait_seconds_sum", "celery")] == pytest.approx(2.0)


def test_the_api_answers_the_summary_of_a_window(client, auth_headers, app_registry):
    run(app_registry, "tasks.b", end=time.time())
    response = client.get("/api/analytics?window=86400", headers=auth_headers)
    assert response.status_code == 200
    body = response.get_json()
    assert body["window"] == 86400 and body["bounds"] == list(BOUNDS) and body["caps"]["names"] == NAME_CAP
    (row,) = body["names"]
    assert (row["name"], row["count"], row["succeeded"], row["failure_rate"]) == ("tasks.b", 1, 1, 0.0)
    assert 0.25 < row["runtime"]["p50"] <= 0.5
    assert client.get("/api/analytics", headers=auth_headers).get_json()["window"] == 3600
    for bad in ("60", "3600.0", "day", ""):
        response = client.get(f"/api/analytics?window={bad}", headers=auth_headers)
        assert response.status_code == 400 and "window must be 3600 or 86400" in response.get_json()["error"]
    assert client.get("/api/analytics").status_code == 401
