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

Then the same on RabbitMQ (rows ", RabbitMQ", after Redis's), when a private node can run here
(``tests/rabbitmq.py``; otherwise a line says why they were skipped): a fresh Redis (result
backend, Pulse's registry) and a private RabbitMQ node as the broker. A real worker on RabbitMQ
runs the sample tasks while a queue bound to Celery's event exchange records every raw event
message (``bench/rabbit_stream.py``); it is cloned to the same number of events, and each round
replays it with kombu's ``Producer`` to the ``celeryev`` exchange with Celery's routing keys.
Pulse's monitor and Flower both consume it through Celery's own receiver (a queue of their own
bound to the exchange), each with Celery's defaults: the event queue's message TTL (5 s) drops
what a consumer has not taken within 5 s, and that counts as lost. Before each replay a probe
message is published until the consumer counts it, so its queue is known to be bound.
"""

import contextlib
import re
import threading
import time
import traceback
from collections.abc import Callable

import requests

from . import flower, rabbit_stream, stream
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


def measure(count: Callable[[], int], publish: Callable[[], object], events: int, settle: float = 3.0,
            limit: float = 900.0) -> tuple[float, int]:
    """Run ``publish()`` (a replay of ``events`` events), poll ``count()``; returns (events/s, processed).

    Done when every event is counted, or the count has not moved for ``settle`` seconds. A poll
    that times out means the process is too busy to answer: it is still working, so it is not
    counted as quiet (Flower's single thread missed a 10 s poll once on a slow day)."""
    base = count()
    started = time.perf_counter()
    publisher = threading.Thread(target=publish)
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


def wait_pulse(url: str) -> None:
    deadline = time.monotonic() + 30
    while not pulse_ready(url) and time.monotonic() < deadline:
        time.sleep(0.1)


def pulse_round(running: Stack, messages: list, events: int) -> tuple[float, int]:
    url = running.start_web("web", PULSE_LOST_AFTER="3600")
    try:
        wait_pulse(url)
        return measure(lambda: pulse_events(url), lambda: stream.publish(running.redis_url, messages), events)
    finally:
        running.stop("web")


def flower_round(running: Stack, messages: list, events: int) -> tuple[float, int]:
    url = flower.start(running, "flower")
    try:
        time.sleep(2.0)  # Flower subscribes from a thread after it listens
        return measure(lambda: flower.events_total(url), lambda: stream.publish(running.redis_url, messages),
                       events)
    finally:
        running.stop("flower")


def wait_bound(count: Callable[[], int], probe: Callable[[], object], timeout: float = 60.0) -> None:
    """Publish a probe until ``count()`` moves: the consumer's queue is bound to the event exchange.

    A consumer says it is connected before its receiver has declared its queue, and RabbitMQ drops
    what an exchange routes to no queue."""
    base = count()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe()
        wait_until = time.monotonic() + 1.0
        while time.monotonic() < wait_until:
            time.sleep(0.05)
            if count() > base:
                time.sleep(0.5)  # a second probe, if one was in flight, is counted before the replay
                return
    raise TimeoutError(f"the consumer counted no probe event within {timeout:.0f}s")


def rabbit_measure(count: Callable[[], int], broker: str, sample: list, messages: list,
                   events: int) -> tuple[float, int]:
    """``measure`` on RabbitMQ, once a probe says the consumer's queue is bound; prints the replay's time
    (what a consumer has not taken within the queue's TTL of its publication is dropped)."""
    wait_bound(count, lambda: rabbit_stream.publish(broker, rabbit_stream.probe(sample)))
    took: list[float] = []
    measured = measure(count, lambda: took.append(rabbit_stream.publish(broker, messages)), events)
    print(f"   replay published in {took[0] if took else float('nan'):.1f}s", flush=True)
    return measured


def pulse_rabbit_round(running: Stack, broker: str, sample: list, messages: list,
                       events: int) -> tuple[float, int]:
    url = running.start_web("web", PULSE_LOST_AFTER="3600")  # the stack's env names the broker
    try:
        wait_pulse(url)
        return rabbit_measure(lambda: pulse_events(url), broker, sample, messages, events)
    finally:
        running.stop("web")


def flower_rabbit_round(running: Stack, broker: str, sample: list, messages: list,
                        events: int) -> tuple[float, int]:
    url = flower.start(running, "flower", broker=broker)
    try:
        return rabbit_measure(lambda: flower.events_total(url), broker, sample, messages, events)
    finally:
        running.stop("flower")


def rows(suffix: str, pulse_rates: list, pulse_lost: list, flower_rates: list, flower_lost: list,
         note: str) -> list[Row]:
    pulse_rate, flower_rate = median(pulse_rates), median(flower_rates)
    ratio = pulse_rate / flower_rate if flower_rate else float("nan")
    competitor = f"flower {flower.version()}"
    return [
        Row("3 ingest", f"events/s processed{suffix}", pulse_rate, "events/s", flower_rate, competitor,
            ">= 3x flower", ratio >= 3.0, f"ratio {ratio:.2f}x, {note}"),
        Row("3 ingest", f"events lost{suffix}", float(max(pulse_lost)), "events", float(max(flower_lost)),
            "flower", "0", max(pulse_lost) == 0),
    ]


def run_redis(quick: bool) -> list[Row]:
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
    return rows("", pulse_rates, pulse_lost, flower_rates, flower_lost,
                f"{size:,} events, {rounds} rounds each")


def run_rabbitmq(quick: bool) -> list[Row]:
    """The same comparison on a private RabbitMQ node; no rows (and a line saying why) without one."""
    reason = rabbit_stream.unavailable()
    with contextlib.ExitStack() as cleanup:
        if reason is None:
            try:
                broker = cleanup.enter_context(rabbit_stream.node("ingest"))
            except Exception as exc:
                traceback.print_exc()
                reason = f"the private RabbitMQ node did not start ({exc})"
        if reason is not None:
            print(f"   RabbitMQ rows skipped: {reason}", flush=True)
            return []
        return rabbitmq_rounds(broker, quick)


def rabbitmq_rounds(broker: str, quick: bool) -> list[Row]:
    size, rounds = (2_000, 1) if quick else (100_000, 2)
    pulse_rates, pulse_lost, flower_rates, flower_lost = [], [], [], []
    with stack("ingest-rabbitmq", BROKER_URL=broker) as running:
        running.start_worker(concurrency=4)
        running.wait_worker()
        sample = rabbit_stream.record(running, broker, tasks=20 if quick else stream.SAMPLE_TASKS)
        running.stop("worker")
        for _round in range(rounds):
            for name, one_round, rates, lost in (("pulse", pulse_rabbit_round, pulse_rates, pulse_lost),
                                                 ("flower", flower_rabbit_round, flower_rates, flower_lost)):
                messages, events = rabbit_stream.expand(sample, size)
                rate, processed = one_round(running, broker, sample, messages, events)
                rates.append(rate)
                lost.append(events - processed)
                print(f"   {name}, RabbitMQ: {events} events, {processed} processed, {rate:,.0f}/s",
                      flush=True)
    return rows(", RabbitMQ", pulse_rates, pulse_lost, flower_rates, flower_lost,
                f"{size:,} events, {rounds} rounds each, Celery's 5 s event queue TTL for both")


def run(quick: bool) -> list[Row]:
    redis_rows = run_redis(quick)
    try:
        rabbit_rows = run_rabbitmq(quick)
    except Exception as exc:  # keep Redis's figures; the RabbitMQ rows say they failed
        traceback.print_exc()
        print(f"   RabbitMQ rows failed: {exc!r} (traceback above)", flush=True)
        rabbit_rows = [Row("3 ingest", "events/s processed, RabbitMQ", None, "events/s",
                           note=f"failed: {exc!r}"),
                       Row("3 ingest", "events lost, RabbitMQ", None, "events")]
    return redis_rows + rabbit_rows
