"""Benchmark 2: end-to-end latency of a progress update, worker call to a subscribed client.

Setup: an embedded Redis, the real server (eventlet) and a real worker of ``bench.tasks``
(thread pool, one thread per task, ``PULSE_PROGRESS_INTERVAL=0`` so every call is sent, also
when a loaded worker runs late and calls back to back). Each ``bench.report`` task reports 10
times a second with the call's wall time as the message; 10, 100 and 1,000 updates/s in
aggregate are 1, 10 and 100 such tasks, their starts spread over one interval. Each update goes
through the progress helper (registry write, stored state, event), Redis pub/sub, the server's
monitor and a Socket.IO push to the task's room.

Pulse: one Socket.IO client (python-socketio, asyncio, websocket) subscribed to every task's
room; latency = receipt time minus the message's wall time, for each new value received.
Competitor: a polling client at 0.5 s (celery-progress's interval), ``GET /api/tasks/<id>``
every 0.5 s per task, measured the same way for each new value it sees (it skips the values
superseded between two polls). The clients alternate rounds on fresh tasks, so neither's load
skews the other. A plain Redis subscriber (the tap) records when every update's event reached
pub/sub: it splits Pulse's latency into worker side and server side, and gives a second figure
for both clients, "until shown": for every update sent, the delay until the client held that
value or a newer one (what a user watching the bar experiences, superseded values included).
Full: 2 rounds of 5 s per client and rate; quick: one round of 1.5 s at 10 and 100 updates/s.
A short warm-up round is not measured.
"""

import asyncio
import bisect
import contextlib
import json
import random
import time
import uuid
from collections import defaultdict

import aiohttp
import requests
import socketio
from redis import asyncio as aioredis

from tasks.celery import make_celery

from . import stream
from .harness import TOKEN, Row, Stack, auth_headers, percentiles, stack, wait_until

NAME = "2 latency"
INTERVAL = 0.1  # seconds between two updates of one task: 10 updates/s per task
POLL = 0.5  # celery-progress's polling interval
TARGET_MS = 50.0
TARGET_RATE = 1000
PROGRESS_CHANNELS = "/*celeryev/task.progress"
SUBSCRIBE_BATCH = 20

Key = tuple[str, int]


class Receipts:
    """When each (task, current) value of one round was sent and first received."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = set(ids)
        self.sent: dict[Key, float] = {}
        self.received: dict[Key, float] = {}

    def __len__(self) -> int:
        return len(self.received)

    def take(self, data: dict, now: float) -> None:
        progress = data.get("progress") if isinstance(data, dict) else None
        if not progress or data.get("id") not in self.ids:
            return
        key = (data["id"], progress.get("current"))
        if key in self.received:
            return  # the same value again (e.g. the success push): not a new update
        try:
            self.sent[key] = float(progress.get("message"))
        except (TypeError, ValueError):
            return
        self.received[key] = now

    def latencies(self) -> list[float]:
        return [at - self.sent[key] for key, at in self.received.items()]


def shown_delays(client: Receipts, tapped: Receipts) -> list[float]:
    """For every update the tap saw, the delay until ``client`` held that value or a newer one."""
    seen: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for (task_id, current), at in client.received.items():
        seen[task_id].append((current, at))
    earliest: dict[str, tuple[list[int], list[float]]] = {}
    for task_id, values in seen.items():
        values.sort()
        currents, firsts, best = [], [], float("inf")
        for current, at in reversed(values):  # earliest receipt of this value or any newer one
            best = min(best, at)
            currents.append(current)
            firsts.append(best)
        earliest[task_id] = (currents[::-1], firsts[::-1])
    delays = []
    for (task_id, current), sent in tapped.sent.items():
        currents, firsts = earliest.get(task_id, ([], []))
        index = bisect.bisect_left(currents, current)
        if index < len(currents):
            delays.append(firsts[index] - sent)
    return delays


class Listener:
    """One Socket.IO client; hands every ``task`` push to the current round's receipts."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.receipts: Receipts | None = None
        self.sio.on("task", self._on_task)

    def _on_task(self, data) -> None:
        if self.receipts is not None:
            self.receipts.take(data, time.time())

    async def connect(self, url: str) -> None:
        await self.sio.connect(url, auth={"token": TOKEN}, transports=["websocket"])

    async def subscribe(self, ids: list[str], on: bool = True) -> None:
        event = "subscribe" if on else "unsubscribe"
        # A few at a time: with redis-py 8's pool cap (100 connections), a burst of 100
        # concurrent subscribes makes the server raise MaxConnectionsError and never answer.
        for start in range(0, len(ids), SUBSCRIBE_BATCH):
            batch = ids[start:start + SUBSCRIBE_BATCH]
            answers = await asyncio.gather(*(self.sio.call(event, {"task": i}, timeout=30) for i in batch))
            errors = [a for a in answers if isinstance(a, dict) and "error" in a]
            if errors:
                raise RuntimeError(f"{event} refused: {errors[0]}")


class Tap:
    """A plain Redis subscriber to the progress events: when each update reached pub/sub."""

    def __init__(self, redis_url: str) -> None:
        self.client = aioredis.Redis.from_url(redis_url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.receipts: Receipts | None = None
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.pubsub.psubscribe(PROGRESS_CHANNELS)
        self.task = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        async for message in self.pubsub.listen():
            if self.receipts is None or message["type"] != "pmessage":
                continue
            now = time.time()
            for event in stream.events_of(json.loads(message["data"])):
                self.receipts.take({"id": event.get("uuid"), "progress": event}, now)

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.pubsub.aclose()
        await self.client.aclose()


def send_tasks(app, ids: list[str], updates: int) -> None:
    """Launch one ``bench.report`` per id, spread over one interval so the load is even."""
    gap = INTERVAL / len(ids)
    start = time.monotonic()
    for number, task_id in enumerate(ids):
        time.sleep(max(0.0, start + number * gap - time.monotonic()))
        app.send_task("bench.report", kwargs={"updates": updates, "interval": INTERVAL}, task_id=task_id)


async def settle(receipts: Receipts, expected: int, end: float, quiet: float) -> None:
    """Wait for every update, or for ``quiet`` seconds without a new one after the scheduled
    ``end`` (a loaded machine runs late; a missing update must not hang the round)."""
    count, changed = 0, time.monotonic()
    while len(receipts) < expected:
        await asyncio.sleep(0.05)
        now = time.monotonic()
        if len(receipts) != count:
            count, changed = len(receipts), now
        elif now > end and now - changed > quiet:
            return


async def socketio_round(listener: Listener, tap: Tap, app, tasks: int, updates: int
                         ) -> tuple[Receipts, Receipts]:
    """Receipts of the Socket.IO client and of the tap, for one round of fresh tasks."""
    ids = [str(uuid.uuid4()) for _ in range(tasks)]
    receipts, tapped = Receipts(ids), Receipts(ids)
    await listener.subscribe(ids)
    listener.receipts, tap.receipts = receipts, tapped
    await asyncio.to_thread(send_tasks, app, ids, updates)
    await settle(tapped, tasks * updates, time.monotonic() + updates * INTERVAL, quiet=1.0)
    # What reached Redis, to the client; a value superseded before its push never comes.
    await settle(receipts, len(tapped), time.monotonic(), quiet=0.5)
    listener.receipts = tap.receipts = None
    await listener.subscribe(ids, on=False)
    return receipts, tapped


async def poll_task(http: aiohttp.ClientSession, url: str, task_id: str, updates: int,
                    receipts: Receipts, deadline: float) -> None:
    """GET the task every POLL seconds (random phase) until its last value was seen."""
    await asyncio.sleep(random.uniform(0, POLL))
    next_poll = time.monotonic()
    while time.monotonic() < deadline and (task_id, updates) not in receipts.received:
        data = None
        with contextlib.suppress(aiohttp.ClientError):  # a failed poll is a missed poll, as in a browser
            async with http.get(f"{url}/api/tasks/{task_id}") as response:
                data = await response.json() if response.status == 200 else None
        if data is not None:
            receipts.take(data, time.time())
        next_poll += POLL
        await asyncio.sleep(max(0.0, next_poll - time.monotonic()))


async def polling_round(http: aiohttp.ClientSession, url: str, tap: Tap, app, tasks: int, updates: int
                        ) -> tuple[Receipts, Receipts]:
    ids = [str(uuid.uuid4()) for _ in range(tasks)]
    receipts, tapped = Receipts(ids), Receipts(ids)
    tap.receipts = tapped
    deadline = time.monotonic() + updates * INTERVAL + 30.0  # left at once when the last value is seen
    sender = asyncio.create_task(asyncio.to_thread(send_tasks, app, ids, updates))
    await asyncio.gather(*(poll_task(http, url, i, updates, receipts, deadline) for i in ids))
    await sender
    tap.receipts = None
    return receipts, tapped


def clock() -> tuple[float, float]:
    return time.process_time(), time.monotonic()


class Tally:
    """One client at one rate, pooled over rounds."""

    def __init__(self) -> None:
        self.values: list[float] = []  # latency of each new value received
        self.shown: list[float] = []  # for every update sent, until it or a newer value was held
        self.worker: list[float] = []  # call -> event on Redis
        self.server: list[float] = []  # event on Redis -> client
        self.expected = self.finals = self.tasks = 0
        self.cpu = self.wall = 0.0

    def add(self, receipts: Receipts, tapped: Receipts, updates: int, began: tuple[float, float]) -> None:
        """Add one round, which began at ``began`` (this process's CPU time, wall time)."""
        cpu, wall = clock()
        self.cpu += cpu - began[0]
        self.wall += wall - began[1]
        self.values += receipts.latencies()
        self.shown += shown_delays(receipts, tapped)
        self.tasks += len(receipts.ids)
        self.expected += len(receipts.ids) * updates
        self.finals += sum((task_id, updates) in receipts.received for task_id in receipts.ids)
        for key, at in receipts.received.items():
            if key in tapped.received:
                self.worker.append(tapped.received[key] - tapped.sent[key])
                self.server.append(at - tapped.received[key])


async def measure(running: Stack, rates: list[int], rounds: int, seconds: float) -> dict[int, tuple]:
    """{rate: (Socket.IO tally, polling tally)}, the clients alternating rounds."""
    app = make_celery(running.env)
    listener, tap = Listener(), Tap(running.redis_url)
    await listener.connect(running.web_url)
    await tap.start()
    results = {}
    async with aiohttp.ClientSession(headers=auth_headers(), connector=aiohttp.TCPConnector(limit=0)) as http:
        await socketio_round(listener, tap, app, max(rates) // 10, 5)  # warm-up: connections, imports
        for rate in rates:
            tasks, updates = max(1, rate // 10), round(seconds / INTERVAL)
            pulse, polling = Tally(), Tally()
            for _ in range(rounds):
                began = clock()
                pulse.add(*await socketio_round(listener, tap, app, tasks, updates), updates, began)
                began = clock()
                polling.add(*await polling_round(http, running.web_url, tap, app, tasks, updates), updates,
                            began)
            results[rate] = (pulse, polling)
    await tap.stop()
    await listener.sio.disconnect()
    app.close()
    return results


def ready(url: str) -> bool:
    with contextlib.suppress(requests.RequestException, ValueError, KeyError):
        return requests.get(f"{url}/healthz", timeout=2).json()["monitor"]["connected"]
    return False


def ms(values: list[float], q: str) -> float:
    return percentiles(values)[q] * 1e3


def rows_for(rate: int, pulse: Tally, polling: Tally) -> list[Row]:
    rows = []
    for q in ("p50", "p95", "p99"):
        checked = q == "p99" and rate == TARGET_RATE
        value = ms(pulse.values, q)
        rows.append(Row(NAME, f"{q} at {rate:,} updates/s", value, "ms", other=ms(polling.values, q),
                        competitor=f"polling {POLL:g} s", target=f"< {TARGET_MS:g} ms" if checked else "",
                        met=value < TARGET_MS if checked else None))
    rows.append(Row(NAME, f"p99 until shown at {rate:,}/s", ms(pulse.shown, "p99"), "ms",
                    other=ms(polling.shown, "p99"), competitor=f"polling {POLL:g} s"))

    def seen(tally: Tally) -> str:
        return (f"{len(tally.values):,} of {tally.expected:,} values "
                f"({100 * len(tally.values) / max(tally.expected, 1):.0f}%), last value of "
                f"{tally.finals}/{tally.tasks} tasks")

    rows[0].note = (f"{max(1, rate // 10)} tasks x 10/s; Socket.IO received {seen(pulse)}, client CPU "
                    f"{100 * pulse.cpu / max(pulse.wall, 1e-9):.0f}% of a core; polling saw {seen(polling)}")
    rows[2].note = ("Pulse split at Redis pub/sub: call -> event on Redis (worker side) p50/p99 "
                    f"{ms(pulse.worker, 'p50'):.1f}/{ms(pulse.worker, 'p99'):.1f} ms; Redis -> client "
                    f"(monitor, push) p50/p99 {ms(pulse.server, 'p50'):.1f}/{ms(pulse.server, 'p99'):.1f} ms")
    rows[3].note = ("every update sent, until the client held it or a newer value (p50 "
                    f"{ms(pulse.shown, 'p50'):.0f} vs {ms(polling.shown, 'p50'):.0f} ms): counts the values "
                    "a client never saw, superseded first")
    return rows


def run(quick: bool) -> list[Row]:
    rates, rounds, seconds = ([10, 100], 1, 1.5) if quick else ([10, 100, 1000], 2, 5.0)
    with stack("latency") as running:
        # Own log names: bench-artifacts/web.log is shared with whatever else runs a stack.
        running.web_url = running.start_web("latency-web")
        running.start_worker("latency-worker", pool="threads", concurrency=max(rates) // 10 + 10,
                             PULSE_PROGRESS_INTERVAL="0")
        running.wait_worker("latency-worker")
        wait_until(lambda: ready(running.web_url), 30, 0.1, "monitor connected")
        results = asyncio.run(measure(running, rates, rounds, seconds))
    return [row for rate in rates for row in rows_for(rate, *results[rate])]
