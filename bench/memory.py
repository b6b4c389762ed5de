"""Benchmark 5: memory of the web server holding 100,000 tasks, beside Flower holding the same.

Setup: an embedded Redis; a real worker (prefork, 4) runs 40 real tasks (progress, success,
failure) while every event is recorded (``bench.stream.record``), then it is stopped. The sample
is trimmed to 5 events a task (sent, received, started, succeeded or failed, and the task's last
``task-progress``) and cloned with fresh ids into 100,000 tasks: 500,000 events. Pulse's server
(defaults: its registry keeps the tasks in Redis) and Flower (``--max_tasks=100000``, in its
process) subscribe to the same Redis, so one full-speed replay feeds both at once. When both
have counted every event (Pulse: ``pulse_events_received_total`` on /metrics; Flower:
``flower_events_total``) or gave up (see ``wait_consumed``; the rest is reported lost), we read
each server's RSS (VmRSS of the process and its children), idle before the stream, at its peak
(sampled every 0.5 s) and holding the tasks after it; and Redis's ``used_memory`` (INFO memory)
before and after, because Pulse keeps its tasks in Redis rather than in its process: the honest
total for Pulse is its RSS growth plus Redis's.

Target: Pulse's RSS at most half of Flower's. Quick: 2,000 tasks (10,000 events), 10 sample tasks.
"""

import base64
import json
import re
import threading
import time
from collections.abc import Callable

import redis
import requests

from . import flower, stream
from .harness import Row, Stack, auth_headers, rss_mb, stack, wait_until

PULSE_EVENTS = re.compile(r"^pulse_events_received_total\{[^}]*\} ([0-9.e+]+)$", re.MULTILINE)
KEEP = frozenset({"task-sent", "task-received", "task-started", "task-succeeded", "task-failed"})
DRAINED_STALL = 20.0  # s without a counted event, nothing left in Redis: the rest is lost
STALL = 600.0         # s without a counted event, whatever is left in Redis
READ_TIMEOUT = 120.0  # s for a /metrics answer from a server busy ingesting
_samples: dict[bool, list[tuple[bytes, dict]]] = {}


# ---- shared with bench/responsive.py (candidates for the harness) ----------------------------

def recorded_sample(running: Stack, quick: bool) -> list[tuple[bytes, dict]]:
    """A real worker's recorded events, made once per process.

    Full: 40 tasks on a prefork worker (4 processes); quick: 10 on a thread-pool worker, which
    starts seconds sooner and runs them all at once.
    """
    if quick not in _samples:
        running.start_worker(**({"pool": "threads", "concurrency": 10} if quick else {"concurrency": 4}))
        running.wait_worker()
        _samples[quick] = stream.record(running, tasks=10 if quick else stream.SAMPLE_TASKS)
        running.stop("worker")
    return _samples[quick]


def trim(sample: list[tuple[bytes, dict]]) -> list[tuple[bytes, dict]]:
    """The sample with 5 events a task: its lifecycle events and only its last progress event."""
    last_progress = {}
    for index, (_channel, envelope) in enumerate(sample):
        for event in stream.events_of(envelope):
            if event["type"] == "task-progress":
                last_progress[event["uuid"]] = (index, event["timestamp"])
    kept = []
    for index, (channel, envelope) in enumerate(sample):
        events = [e for e in stream.events_of(envelope) if e["type"] in KEEP
                  or last_progress.get(e.get("uuid")) == (index, e["timestamp"])]
        if events:
            body = json.dumps(events if len(events) > 1 else events[0]).encode()
            kept.append((channel, dict(envelope, body=base64.b64encode(body).decode())))
    return kept


def pulse_events(url: str) -> int:
    """Events Pulse's monitor has processed, summed over types, from /metrics."""
    text = requests.get(f"{url}/metrics", headers=auth_headers(), timeout=READ_TIMEOUT).text
    return int(sum(float(value) for value in PULSE_EVENTS.findall(text)))


def flower_events(url: str) -> int:
    """``flower.events_total``, waiting longer: digesting 500,000 events, Flower answered /metrics
    only after up to 51 s here (its 10 s timeout made a busy Flower look stuck)."""
    text = requests.get(f"{url}/metrics", timeout=READ_TIMEOUT).text
    return int(sum(float(value) for value in flower.EVENTS.findall(text)))


def tolerant(read: Callable[[], int]) -> Callable[[], int | None]:
    """``read``, or None when the server did not answer (busy: not evidence that it stopped)."""

    def wrapped() -> int | None:
        try:
            return read()
        except requests.RequestException:
            return None

    return wrapped


def prime(redis_url: str, sample: list, counters: dict[str, Callable[[], int | None]]) -> dict[str, int]:
    """Publish small batches until every consumer counts them (all subscribed); then wait until the
    counts settle and return them, the baselines of the run."""
    start = {name: read() or 0 for name, read in counters.items()}

    def subscribed() -> bool:
        stream.publish(redis_url, stream.expand(sample, 5)[0])
        return all((read() or 0) > start[name] for name, read in counters.items())

    wait_until(subscribed, 60, 0.3, "consumers counting events")
    previous: dict[str, int | None] = {}

    def settled() -> dict[str, int] | None:
        nonlocal previous
        now = {name: read() for name, read in counters.items()}
        done, previous = now == previous and None not in now.values(), now
        return now if done else None

    return wait_until(settled, 60, 0.5, "consumers idle")


def pubsub_backlog(redis_url: str) -> int:
    """Bytes waiting in Redis for its pub/sub subscribers (their output buffers)."""
    client = redis.Redis.from_url(redis_url)
    try:
        return sum(int(c["omem"]) for c in client.client_list()
                   if int(c.get("sub", 0)) or int(c.get("psub", 0)))
    finally:
        client.close()


def wait_consumed(redis_url: str, counters: dict[str, Callable[[], int | None]], base: dict[str, int],
                  expected: int) -> dict[str, tuple[int, float]]:
    """Wait until each consumer counted ``expected`` events past ``base``, or gave up.

    A consumer gives up when it answers the same count for DRAINED_STALL s with nothing left for
    any subscriber in Redis (the rest is lost), or after STALL s without a new count whatever is
    left. Returns, per consumer, (events counted, seconds from the call until that count was
    read: an upper bound when the server is slow to answer).
    """
    started = time.monotonic()
    result = {name: (0, 0.0) for name in counters}
    pending = set(counters)
    while pending:
        for name in sorted(pending):
            value = counters[name]()
            now = time.monotonic() - started
            if value is not None and value - base[name] > result[name][0]:
                result[name] = (value - base[name], now)
            idle = now - result[name][1]
            stalled = value is not None and idle > DRAINED_STALL and pubsub_backlog(redis_url) == 0
            if result[name][0] >= expected or stalled or idle > STALL:
                pending.discard(name)
        time.sleep(0.5)
    return result


def used_memory(redis_url: str) -> float:
    """Redis's used_memory in MiB."""
    client = redis.Redis.from_url(redis_url)
    try:
        return client.info("memory")["used_memory"] / 2**20
    finally:
        client.close()


def measure_export(url: str, pid: int, kind: str) -> dict[str, float]:
    """Stream ``/api/tasks.<kind>`` (every task) while sampling the server's RSS every 0.1 s."""
    peak, done = rss_mb(pid), threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.1):
            peak = max(peak, rss_mb(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    before = rss_mb(pid)
    sampler.start()
    started, lines, size = time.monotonic(), 0, 0
    with requests.get(f"{url}/api/tasks.{kind}", headers=auth_headers(), stream=True, timeout=600) as answer:
        answer.raise_for_status()
        for chunk in answer.iter_content(chunk_size=1 << 16):
            lines += chunk.count(b"\n")
            size += len(chunk)
    seconds = time.monotonic() - started
    done.set()
    sampler.join()
    return {"seconds": seconds, "lines": lines, "mib": size / 2**20, "before": before,
            "peak": max(peak, rss_mb(pid))}


# ---- the benchmark ---------------------------------------------------------------------------

def run(quick: bool) -> list[Row]:
    tasks_wanted = 2_000 if quick else 100_000
    with stack("memory") as running:
        sample = trim(recorded_sample(running, quick))
        messages, tasks = stream.expand(sample, tasks_wanted * 5)
        expected = stream.event_count(messages)
        pulse_url = running.start_web()
        flower_url = flower.start(running, max_tasks=100_000)
        pids = {"pulse": running.procs["web"].pid, "flower": running.procs["flower"].pid}
        counters = {"pulse": tolerant(lambda: pulse_events(pulse_url)),
                    "flower": tolerant(lambda: flower_events(flower_url))}
        base = prime(running.redis_url, sample, counters)
        idle = {name: rss_mb(pid) for name, pid in pids.items()}
        redis_before = used_memory(running.redis_url)
        peak = dict(idle)
        reading = threading.Event()

        def sample_peak() -> None:  # a thread: the counters' reads may block for many seconds
            while not reading.wait(0.5):
                for name, pid in pids.items():
                    peak[name] = max(peak[name], rss_mb(pid))

        sampler = threading.Thread(target=sample_peak, daemon=True)
        sampler.start()
        publisher = threading.Thread(target=stream.publish, args=(running.redis_url, messages))
        publisher.start()
        consumed = wait_consumed(running.redis_url, counters, base, expected)
        publisher.join()
        time.sleep(1 if quick else 5)  # let timers and coalesced pushes finish before the reading
        reading.set()
        sampler.join()
        holding = {name: rss_mb(pid) for name, pid in pids.items()}
        peak = {name: max(peak[name], holding[name]) for name in pids}
        redis_growth = used_memory(running.redis_url) - redis_before
        running.stop("flower")  # the exports need the machine, not a competitor
        exports = {kind: measure_export(pulse_url, pids["pulse"], kind) for kind in ("ndjson", "csv")}
    return rows(tasks, expected, consumed, idle, peak, holding, redis_growth) + export_rows(tasks, exports)


def export_rows(tasks: int, exports: dict[str, dict[str, float]]) -> list[Row]:
    out = []
    for kind, export in exports.items():
        note = (f"{export['lines']:,} lines, {export['mib']:.0f} MiB streamed; server RSS "
                f"{export['before']:.0f} MiB before, {export['peak']:.0f} MiB at most during it")
        out += [Row("5 memory", f"export {tasks:,} tasks as {kind}", export["seconds"], "s", note=note),
                Row("5 memory", f"export {kind}: server RSS growth", export["peak"] - export["before"], "MiB",
                    target="constant (one page held)")]
    return out


def rows(tasks: int, expected: int, consumed: dict, idle: dict, peak: dict, holding: dict,
         redis_growth: float) -> list[Row]:
    bench = "5 memory"
    growth = {name: holding[name] - idle[name] for name in holding}
    ratio = holding["pulse"] / holding["flower"]
    lost = {name: expected - count for name, (count, _s) in consumed.items()}
    setup = (f"{tasks:,} tasks ({expected:,} events, 5 a task) replayed once into both at once; "
             f"Pulse RSS is {ratio:.0%} of Flower's")
    return [
        Row(bench, f"server RSS holding {tasks:,} tasks", holding["pulse"], "MiB", holding["flower"],
            "flower", "<= 50% of Flower", holding["pulse"] <= 0.5 * holding["flower"], setup),
        Row(bench, "RSS growth over idle", growth["pulse"], "MiB", growth["flower"], "flower",
            note=f"idle: Pulse {idle['pulse']:.0f} MiB, Flower {idle['flower']:.0f} MiB"),
        Row(bench, "peak RSS", peak["pulse"], "MiB", peak["flower"], "flower"),
        Row(bench, "Redis used_memory growth", redis_growth, "MiB", 0.0, "flower",
            note=f"Pulse's registry in Redis, {redis_growth * 2**20 / tasks:,.0f} bytes a task; "
                 "Flower keeps no tasks in Redis"),
        Row(bench, "RSS + Redis growth", growth["pulse"] + redis_growth, "MiB", growth["flower"], "flower",
            note="all the memory the tasks cost: Pulse's process and its registry vs Flower's process"),
        Row(bench, "events processed", consumed["pulse"][0], "events", consumed["flower"][0], "flower",
            note=f"of {expected:,}; lost: Pulse {lost['pulse']:,}, Flower {lost['flower']:,}; "
                 f"took Pulse {consumed['pulse'][1]:.0f} s, Flower {consumed['flower'][1]:.0f} s"),
    ]
