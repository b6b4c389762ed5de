"""Benchmark 7: how fast the server answers while its monitor ingests a stream at full speed.

Setup: an embedded Redis; the real worker's recorded sample (``memory.recorded_sample``: every
event of 40 real tasks, each ``task-progress`` included) cloned with fresh ids into 100,000 events
(about 13,000 tasks). First Pulse's server alone on the Redis (defaults), then Flower alone (a
fresh clone of the same stream), so neither's ingest loads the other's figures. Each round: a
primer until the server counts events, then one client on a keep-alive session requests the
endpoints one after the other, cycling, from the moment the stream starts until the server has
counted every event (or gave up: ``memory.wait_consumed``); meanwhile the stream is published at
full speed (pipelined PUBLISH; the backlog waits in Redis, whose pub/sub buffer limit is lifted).

Endpoints, Pulse beside Flower: ``/healthz`` / ``/healthcheck``; ``/api/tasks?limit=50`` /
``/api/tasks?limit=50&sort_by=-received`` (Flower's API, newest first like Pulse's, enabled with
FLOWER_UNAUTHENTICATED_API); ``/metrics`` (both); the Tasks page ``/tasks`` (both; Pulse's after
logging in). Measured: wall time per request during the ingest, p50/p99/max; and the ingest time.
Target: p99 under 200 ms. Quick: 5,000 events, 10 sample tasks.
"""

import threading
import time

import requests

from . import flower, stream
from .harness import Row, Stack, auth_headers, log_in, percentiles, stack
from .memory import flower_events, prime, pulse_events, recorded_sample, tolerant, wait_consumed

TARGET_MS = 200.0
# (row name, Pulse's path, Flower's path)
ENDPOINTS = (("health", "/healthz", "/healthcheck"),
             ("list 50", "/api/tasks?limit=50", "/api/tasks?limit=50&sort_by=-received"),
             ("metrics", "/metrics", "/metrics"),
             ("tasks page", "/tasks", "/tasks"))


class Poller(threading.Thread):
    """One client requesting ``paths`` in turn until stopped; wall ms per request, per path."""

    def __init__(self, session: requests.Session, base: str, paths: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.session, self.base, self.paths = session, base, paths
        self.times: dict[str, list[float]] = {name: [] for name in paths}
        self.errors = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            for name, path in self.paths.items():
                started = time.perf_counter()
                try:
                    ok = self.session.get(self.base + path, timeout=30).ok
                except requests.RequestException:
                    ok = False
                if ok:
                    self.times[name].append((time.perf_counter() - started) * 1000)
                else:
                    self.errors += 1


def under_load(running: Stack, session: requests.Session, base: str, paths: dict[str, str],
               count, sample: list, events: int) -> dict:
    """Publish ``events`` cloned events while polling ``paths``; returns the readings."""
    messages, _tasks = stream.expand(sample, events)
    expected = stream.event_count(messages)
    count = tolerant(count)  # a server too busy to answer /metrics has not stopped
    base_count = prime(running.redis_url, sample, {"server": count})
    poller = Poller(session, base, paths)
    poller.start()
    publisher = threading.Thread(target=stream.publish, args=(running.redis_url, messages))
    publisher.start()
    consumed = wait_consumed(running.redis_url, {"server": count}, base_count, expected)["server"]
    poller.stopping.set()
    poller.join()
    publisher.join()
    return {"times": poller.times, "errors": poller.errors, "consumed": consumed, "expected": expected}


def pulse_round(running: Stack, sample: list, events: int) -> dict:
    base = running.start_web()
    with requests.Session() as session:
        log_in(session, base)  # the tasks page needs a session
        session.headers.update(auth_headers())
        paths = {name: pulse for name, pulse, _flower in ENDPOINTS}
        result = under_load(running, session, base, paths, lambda: pulse_events(base), sample, events)
    running.stop("web")
    return result


def flower_round(running: Stack, sample: list, events: int) -> dict:
    running.env["FLOWER_UNAUTHENTICATED_API"] = "true"  # Flower 2 refuses its API without auth otherwise
    base = flower.start(running)
    with requests.Session() as session:
        paths = {name: other for name, _pulse, other in ENDPOINTS}
        result = under_load(running, session, base, paths, lambda: flower_events(base), sample, events)
    running.stop("flower")
    return result


def run(quick: bool) -> list[Row]:
    events = 5_000 if quick else 100_000
    with stack("responsive") as running:
        sample = recorded_sample(running, quick)
        pulse = pulse_round(running, sample, events)
        other = flower_round(running, sample, events)
    return rows(events, pulse, other)


def rows(events: int, pulse: dict, other: dict) -> list[Row]:
    bench, out = "7 responsive", []
    for name, _pulse_path, _flower_path in ENDPOINTS:
        mine, theirs = percentiles(pulse["times"][name]), percentiles(other["times"][name])
        for key in ("p50", "p99", "max"):
            out.append(Row(bench, f"{name} {key}", mine[key], "ms", theirs[key], "flower",
                           target=f"p99 < {TARGET_MS:.0f} ms" if key == "p99" else "",
                           met=mine["p99"] < TARGET_MS if key == "p99" else None,
                           note=f"{len(pulse['times'][name])} requests to Pulse, {len(other['times'][name])} "
                                "to Flower during the ingest" if key == "p50" else ""))
    (count, seconds), (other_count, other_seconds) = pulse["consumed"], other["consumed"]
    out.append(Row(bench, "ingest time", seconds, "s", other_seconds, "flower", note=(
        f"{events:,} events published at full speed; counted: Pulse {count:,}, Flower {other_count:,} "
        f"of {pulse['expected']:,}; failed requests: Pulse {pulse['errors']}, Flower {other['errors']}")))
    return out
