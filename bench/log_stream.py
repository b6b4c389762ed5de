"""Benchmark 12, live task logs: 100 tasks logging 100 lines a second each, to their open pages.

Setup: an embedded Redis, the real server (eventlet, defaults) and two real workers of
``bench.tasks``. The logging worker (gevent pool, one green thread per task, queue
``bench-logs``, ``PULSE_LOG_LOGGERS=bench.lines``) runs ``tasks`` ``bench.log`` tasks, sent over
one second, each logging ``RATE`` lines a second for ``span`` seconds on the logger
``bench.lines``, each message the wall time of its call. The logger does not propagate, so the
worker's console does not write them all too; gevent, because 100 OS threads waking 10,000 times
a second cost half a core in this machine's GIL before any logging (a thread pool measured that).
Pulse's handler batches the lines (a write per task every 0.25 s, whose ``task-log`` event goes
out in the same round trip); the events go through Redis pub/sub to the server's monitor, which
pushes each batch to the task's room.

Pages: one Socket.IO client per task (python-socketio, asyncio, websocket), each joined to its
task's room with ``subscribe`` ``{"task": id}``, as the task page's log pane is
(``static/js/logpane.js``); each line counts once, by its number. A plain Redis subscriber (the
tap) notes when each batch's event reached pub/sub, to split the latency into the worker's side
(mostly the batching) and the server's. Measured over the window in which every task was logging
(from the last task's first line to the first task's last line).

Dashboard: as in ``bench/bulk.py``, the other worker (thread pool, ``PULSE_PROGRESS_INTERVAL=0``)
runs ``bench.report`` tasks throughout (``reporters`` at a time, 4 calls a second each) and one
client in the dashboard room measures each call's lag, first for a baseline without the log
stream, then during it. Target p99 < 250 ms (the fan-out target, ``bench/fanout.py``).

Targets: a line reaches its page within ``TARGET_LINE`` at p99: one batch interval (0.25 s, the
wait of a line logged just after a write) plus the dashboard's own push target (0.25 s); every
line logged arrives, once. Full: 100 tasks x 100 lines/s (10,000 lines/s) for 15 s, 20 reporters,
a 5 s baseline; quick: 10 tasks for 4 s, 5 reporters, a 2 s baseline.
"""

import asyncio
import json
import os
import signal
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass

import redis
import socketio

from pulse import devstack
from tasks.celery import make_celery

from . import stream
from .bulk import Dashboard, Feeder, ready
from .bulk import Size as FeederSize
from .fanout import Usage
from .harness import TOKEN, Row, percentiles, stack, wait_until
from .tasks import LINES_LOGGER

NAME = "12 log stream"
RATE = 100.0  # lines a second per task
TARGET_LINE = 0.500  # p99, call to page (see the docstring)
TARGET_LAG = 0.250  # the dashboard's fan-out target (bench/fanout.py TARGET_LAG)
LOG_CHANNELS = "/*celeryev/task.log"
STAGGER = 1.0  # seconds over which the logging tasks are sent
LOG_QUEUE = "bench-logs"  # the logging tasks' worker's alone
CONNECTS = 20  # page clients connecting at once


@dataclass(frozen=True)
class Size:
    tasks: int
    span: float  # seconds each task logs
    reporters: int  # bench.report tasks running at any time
    report_span: float  # seconds each of them reports
    baseline: float


FULL = Size(tasks=100, span=15.0, reporters=20, report_span=10.0, baseline=5.0)
QUICK = Size(tasks=10, span=4.0, reporters=5, report_span=3.0, baseline=2.0)


class Pages:
    """A Socket.IO client per task, each in its task's room, in an asyncio loop of its own: when
    each line was logged and when it arrived."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.clients: list[socketio.AsyncClient] = []
        self.lines: dict[str, dict[int, tuple[float, float]]] = defaultdict(dict)  # id -> seq -> (call, at)
        self.pushes = 0
        self.numbers_only = 0  # pushes too big to carry their lines (a page reads those from the API)
        self.dropped = 0  # clients disconnected while measuring

    def _run(self, coro, timeout: float = 120.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def open(self, url: str, ids: list[str]) -> None:
        self._run(self._open(url, ids))

    async def _open(self, url: str, ids: list[str]) -> None:
        for start in range(0, len(ids), CONNECTS):
            await asyncio.gather(*(self._page(url, task_id) for task_id in ids[start:start + CONNECTS]))

    async def _page(self, url: str, task_id: str) -> None:
        sio = socketio.AsyncClient(reconnection=False)
        received = self.lines[task_id]

        def on_log(packet: dict) -> None:
            now = time.time()
            self.pushes += 1
            if packet.get("lines") is None:
                self.numbers_only += 1
                return
            for line in packet["lines"]:
                received.setdefault(line["seq"], (float(line["message"]), now))

        def on_disconnect(*_reason) -> None:
            self.dropped += 1

        sio.on("log", on_log)
        sio.on("disconnect", on_disconnect)
        await sio.connect(url, auth={"token": TOKEN}, transports=["websocket"], wait_timeout=30)
        ack = await sio.call("subscribe", {"task": task_id}, timeout=30)
        if not isinstance(ack, dict) or "error" in ack:
            raise RuntimeError(f"subscribing to task {task_id} failed: {ack!r}")
        self.clients.append(sio)

    async def _close(self) -> None:
        await asyncio.gather(*(sio.disconnect() for sio in self.clients))

    def close(self) -> None:
        self._run(self._close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Tap(threading.Thread):
    """A plain Redis subscriber to the ``task-log`` events: when each line's batch reached pub/sub."""

    def __init__(self, redis_url: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(redis_url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe(LOG_CHANNELS)
        self.seen: dict[tuple[str, int], float] = {}  # (task id, line number) -> when
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            message = self.pubsub.get_message(timeout=0.2)
            if message is None or message["type"] != "pmessage":
                continue
            now = time.time()
            for event in stream.events_of(json.loads(message["data"])):
                for seq in range(event["first"], event["last"] + 1):
                    self.seen[(event["uuid"], seq)] = now

    def stop(self) -> None:
        self.stopping.set()
        self.join(5)
        self.pubsub.close()
        self.client.close()


def send(app, ids: list[str], span: float) -> None:
    """One ``bench.log`` per id, spread over ``STAGGER`` seconds so their batches do not align."""
    start = time.monotonic()
    for number, task_id in enumerate(ids):
        time.sleep(max(0.0, start + number * STAGGER / len(ids) - time.monotonic()))
        app.send_task("bench.log", kwargs={"seconds": span, "rate": RATE}, task_id=task_id, queue=LOG_QUEUE)


def run(quick: bool) -> list[Row]:
    size = QUICK if quick else FULL
    with stack("log-stream") as running:
        base = running.start_web()
        running.start_worker(pool="threads", concurrency=2 * size.reporters + 5, PULSE_PROGRESS_INTERVAL="0")
        running.procs["logs"] = devstack.start_worker(
            dict(running.env, PULSE_LOG_LOGGERS=LINES_LOGGER), concurrency=size.tasks + 5,
            log=running.log("logs"), name="logs", pool="gevent", app="bench.tasks", options=("-Q", LOG_QUEUE))
        running.wait_worker()
        running.wait_worker("logs")
        wait_until(lambda: ready(base), 30, 0.1, "monitor connected")
        app = make_celery(running.env)
        dashboard, pages, tap = Dashboard(), Pages(), Tap(running.redis_url)
        dashboard.connect(base)
        feeder = Feeder(running, FeederSize(0, tasks=size.reporters, span=size.report_span, baseline=0))
        feeder.start()
        tap.start()
        try:
            time.sleep(size.report_span + 1.0)  # every reporting slot filled: a steady dashboard stream
            baseline_start = time.time()
            time.sleep(size.baseline)
            baseline = (baseline_start, time.time())
            ids = [str(uuid.uuid4()) for _ in range(size.tasks)]
            pages.open(base, ids)
            usage = Usage({"server": running.procs["web"].pid, "worker": running.procs["logs"].pid,
                           "redis": running.procs["redis"].pid})
            send(app, ids, size.span)
            logged = {task_id: app.AsyncResult(task_id).get(timeout=size.span + 120) for task_id in ids}
            cpu = usage.read()
            time.sleep(1.0)  # the last batches' pushes
            dropped = pages.dropped + dashboard.dropped  # before our own disconnects count
        finally:
            feeder.stop()
            tap.stop()
            pages.close()
            dashboard.sio.disconnect()
            app.close()
            # Cold shutdown: the reporting tasks still running need not finish.
            devstack.stop(running.procs.pop("worker"), signal.SIGQUIT)
    if dropped:
        raise RuntimeError("a Socket.IO client was disconnected during the benchmark")
    return rows(size, logged, pages, tap, dashboard, baseline, cpu, feeder.sent)


def rows(size: Size, logged: dict[str, int], pages: Pages, tap: Tap, dashboard: Dashboard,
         baseline: tuple[float, float], cpu: dict[str, float], reports_sent: int) -> list[Row]:
    received = {task_id: pages.lines[task_id] for task_id in logged}
    calls = [[call for call, _at in lines.values()] for lines in received.values() if lines]
    start, end = max(min(c) for c in calls), min(max(c) for c in calls)  # every task logging
    window = [(task_id, seq, call, at) for task_id, lines in received.items()
              for seq, (call, at) in lines.items() if start <= call <= end]
    line = percentiles([at - call for _t, _s, call, at in window])
    tapped = [(tap.seen[(t, s)], call, at) for t, s, call, at in window if (t, s) in tap.seen]
    worker = percentiles([on_redis - call for on_redis, call, _at in tapped])
    server = percentiles([at - on_redis for on_redis, _call, at in tapped])
    total, arrived = sum(logged.values()), sum(len(lines) for lines in received.values())
    missing = sum(1 for task_id, count in logged.items() for seq in range(1, count + 1)
                  if seq not in received[task_id])
    before, during = percentiles(dashboard.lags(*baseline)), percentiles(dashboard.lags(start, end))
    seconds = end - start
    return [
        Row(NAME, "log line, call to page, p50", line["p50"] * 1e3, "ms",
            note=f"{size.tasks} tasks x {RATE:.0f} lines/s for {size.span:.0f} s, a client per task in its "
                 f"room; the {len(window):,} lines logged in the {seconds:.1f} s every task was logging; "
                 f"max {line['max'] * 1e3:.0f} ms"),
        Row(NAME, "log line, call to page, p99", line["p99"] * 1e3, "ms",
            target=f"p99 < {TARGET_LINE * 1e3:.0f} ms", met=line["p99"] < TARGET_LINE),
        Row(NAME, "  of which worker side, p99", worker["p99"] * 1e3, "ms",
            note=f"call to its batch's task-log event on Redis (the tap), p50 {worker['p50'] * 1e3:.0f} ms: "
                 f"mostly the batching (a write per task every 0.25 s); then Redis to the page, p50 "
                 f"{server['p50'] * 1e3:.0f} ms, p99 {server['p99'] * 1e3:.0f} ms"),
        Row(NAME, "lines delivered to their page", arrived, "lines", target=f"{total:,}",
            met=arrived == total and not missing,
            note=f"each once, by number; {missing} missing; {pages.pushes:,} log pushes, "
                 f"{pages.numbers_only} of them without their lines (too big: a page reads the API)"),
        Row(NAME, "log lines a second, all tasks", len(window) / seconds, "lines/s",
            note=f"the load: {size.tasks * RATE:,.0f} a second asked; below it, the tasks ran late (the "
                 f"logging worker used {100 * cpu['worker']:.0f}% of a core)"),
        Row(NAME, "dashboard lag p50, baseline", before["p50"] * 1e3, "ms",
            note=f"{size.reporters} bench.report tasks x 4/s, one client in the dashboard room; "
                 f"{baseline[1] - baseline[0]:.1f} s without the log stream; "
                 f"max {before['max'] * 1e3:.0f} ms"),
        Row(NAME, "dashboard lag p99, baseline", before["p99"] * 1e3, "ms"),
        Row(NAME, "dashboard lag p50, during log stream", during["p50"] * 1e3, "ms",
            note=f"calls made while every task was logging: {len(dashboard.lags(start, end))} "
                 f"({reports_sent} bench.report tasks sent in all); max {during['max'] * 1e3:.0f} ms"),
        Row(NAME, "dashboard lag p99, during log stream", during["p99"] * 1e3, "ms",
            target=f"p99 < {TARGET_LAG * 1e3:.0f} ms", met=during["p99"] < TARGET_LAG),
        Row(NAME, "server CPU during log stream", 100 * cpu["server"], "% of a core",
            note=f"from the first send to the last task's end: logging worker {100 * cpu['worker']:.0f}, "
                 f"Redis {100 * cpu['redis']:.0f}; all {os.cpu_count()} cores together "
                 f"{100 * cpu['machine']:.0f} busy, other processes on the machine included"),
    ]
