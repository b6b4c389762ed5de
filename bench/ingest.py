"""Benchmark 3, monitor ingest: the same recorded event stream into Pulse's monitor and into Flower.

Setup: an embedded Redis (pub/sub output buffers unlimited for every subscriber alike, so a slow
consumer is measured, not disconnected); a real worker runs 40 real tasks (progress, success,
structured failure) while every raw event message is recorded, then stops. The sample is cloned
with fresh task ids to 100,000 task events (2,000 with --quick). Each round starts one consumer
alone on the machine (Pulse's real web server, or Flower from its own virtualenv), replays the
stream with pipelined PUBLISH at full speed, and polls the consumer's own event counter until it
holds still. Rounds alternate Pulse, Flower, Pulse, Flower... Reported: medians of events/s
(processed / time from the first PUBLISH to the last event processed) and events lost
(published - processed).
"""

import re
import threading
import time

import requests

from . import flower, stream
from .harness import Row, Stack, auth_headers, median, stack

PULSE_EVENTS = re.compile(r"^pulse_events_received_total\{[^}]*\} ([0-9.e+]+)$", re.MULTILINE)
CONNECTED = re.compile(r"^pulse_monitor_connected ([0-9.]+)$", re.MULTILINE)


def pulse_events(url: str) -> int:
    text = requests.get(f"{url}/metrics", headers=auth_headers(), timeout=10).text
    return int(sum(float(value) for value in PULSE_EVENTS.findall(text)))


def pulse_ready(url: str) -> bool:
    text = requests.get(f"{url}/metrics", headers=auth_headers(), timeout=10).text
    found = CONNECTED.search(text)
    return bool(found and float(found.group(1)) == 1.0)


def measure(count, messages: list, events: int, redis_url: str, settle: float = 3.0,
            limit: float = 900.0) -> tuple[float, int]:
    """Replay ``messages`` and poll ``count()``; returns (events/s, events processed).

    Done when every event is counted, or the count has not moved for ``settle`` seconds. A poll
    that times out means the process is too busy to answer: it is still working, so it is not
    counted as quiet (Flower's single thread missed a 10 s poll once on a slow day)."""
    base = count()
    started = time.perf_counter()
    publisher = threading.Thread(target=stream.publish, args=(redis_url, messages))
    publisher.start()
    last, last_change, busy = base, started, started
    while time.perf_counter() - started < limit:
        time.sleep(0.05)
        try:
            seen = count()
        except requests.Timeout:
            busy = time.perf_counter()
            continue
        now = time.perf_counter()
        if seen != last:
            last, last_change = seen, now
        if seen - base >= events or now - max(last_change, busy) > settle:
            break
    publisher.join()
    processed = last - base
    return processed / max(last_change - started, 1e-9), processed


def pulse_round(running: Stack, messages: list, events: int) -> tuple[float, int]:
    url = running.start_web("web", PULSE_LOST_AFTER="3600")
    try:
        deadline = time.monotonic() + 30
        while not pulse_ready(url) and time.monotonic() < deadline:
            time.sleep(0.1)
        return measure(lambda: pulse_events(url), messages, events, running.redis_url)
    finally:
        running.stop("web")


def flower_round(running: Stack, messages: list, events: int) -> tuple[float, int]:
    url = flower.start(running, "flower")
    try:
        time.sleep(2.0)  # Flower subscribes from a thread after it listens
        return measure(lambda: flower.events_total(url), messages, events, running.redis_url)
    finally:
        running.stop("flower")


def run(quick: bool) -> list[Row]:
    size, rounds = (2_000, 1) if quick else (100_000, 2)
    pulse_rates, pulse_lost, flower_rates, flower_lost = [], [], [], []
    with stack("ingest") as running:
        running.start_worker(concurrency=4)
        running.wait_worker()
        sample = stream.record(running, tasks=20 if quick else stream.SAMPLE_TASKS)
        running.stop("worker")
        for _round in range(rounds):
            for name, one_round, rates, lost in (("pulse", pulse_round, pulse_rates, pulse_lost),
                                                 ("flower", flower_round, flower_rates, flower_lost)):
                messages, _tasks = stream.expand(sample, size)
                events = stream.event_count(messages)
                rate, processed = one_round(running, messages, events)
                rates.append(rate)
                lost.append(events - processed)
                print(f"   {name}: {events} events, {processed} processed, {rate:,.0f}/s", flush=True)
    pulse_rate, flower_rate = median(pulse_rates), median(flower_rates)
    ratio = pulse_rate / flower_rate if flower_rate else float("nan")
    competitor = f"flower {flower.version()}"
    return [
        Row("3 ingest", "events/s processed", pulse_rate, "events/s", flower_rate, competitor, ">= 3x flower",
            ratio >= 3.0, f"ratio {ratio:.2f}x, {size:,} events, {rounds} rounds each"),
        Row("3 ingest", "events lost", float(max(pulse_lost)), "events", float(max(flower_lost)),
            "flower", "0", max(pulse_lost) == 0),
    ]
