"""Soak: mixed tasks at a steady rate for an hour; the memory of every process should stay flat.

``make soak [DURATION=3600]`` or ``python -m bench.soak --duration 3600 --rate 10``; not in
``bench.run``'s list and not in CI.

Setup: an embedded Redis, two real workers of ``bench.tasks`` (``prefork``: 2 pool processes;
``threads``: a thread pool of 4) and the real server. For the duration the driver sends ``rate``
tasks a second through a producer app, drawn from MIX (progress, short successes, structured
failures, crashes; no task retries, so there are no retries), launches one through the API
every 10 s and waits on it (``?wait=``), polls the API (list, counts, a recent task; overview and
workers every 5 s) and keeps Socket.IO clients busy: two dashboards, one dashboard that
reconnects every 10 s, and one client that joins a recent task's room every second and leaves it
20 s later.

Bounds: the registry keeps a record for ``duration / 24`` after its last change (150 s in an
hour; ``PULSE_RETENTION``, pruned every 10 s) and Celery keeps a result twice as long
(``bench/soak_celeryconfig.py``; its default is a day), so the tasks Redis holds plateau after
about 5 minutes, and so should its memory.

Every 30 s (``duration / 12`` for shorter runs) a sample reads the RSS of each process (the
server, each worker's main process and pool children, redis-server), Redis's used_memory and key
count, the registry's records, the broker queue's depth and the tasks done (the monitor's
task-succeeded and task-failed counts). The verdict compares each memory figure's sample at
minute 10 (``duration / 6``: past the warm-up and Redis's plateau) with the last one: flat when
it grew by at most TOLERANCE_MIB or TOLERANCE_SHARE of its value, whichever is larger. The
samples also go to ``bench-artifacts/soak-<time>.csv``. Exits non-zero when a process died or a
figure is missing, never because of the verdict.
"""

import argparse
import csv
import random
import re
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis
import requests
import socketio

from pulse.server.model.results import use_lookup_only_backend

from .harness import ARTIFACTS, TOKEN, Stack, auth_headers, rss_mb, stack, wait_until

MIX = (  # (weight, task, kwargs): about 0.3 s of work a task on average
    (40, "tasks.demo.echo", {"value": {"soak": True}}),
    (25, "tasks.demo.count", {"total": 10, "delay": 0.05}),
    (10, "bench.report", {"updates": 6, "interval": 0.25}),
    (15, "tasks.demo.fail_with_details", {"step": 2, "delay": 0.05}),
    (10, "tasks.demo.crash", {}),
)
# Flat: at most 5 MiB or 5 % of growth from minute 10 to the end. Between those samples ~30,000
# tasks run, so 5 MiB catches a leak of about 175 bytes a task; below it, RSS moves with
# allocator arenas and garbage-collector timing, and used_memory with Redis's client buffers.
TOLERANCE_MIB = 5.0
TOLERANCE_SHARE = 0.05
DONE = re.compile(r'^pulse_events_received_total\{type="task-(?:succeeded|failed)"\} ([0-9.e+]+)$', re.M)
API_LAUNCH = "tasks.demo.count"
TIMEOUT = 30.0  # s for any answer from the server


@dataclass(frozen=True)
class Plan:
    """How long, how fast, and the times derived from the duration."""

    duration: float
    rate: float

    @property
    def retention(self) -> int:
        return int(max(10, self.duration / 24))

    @property
    def prune_every(self) -> float:
        return max(1.0, min(10.0, self.retention / 3))

    @property
    def warmup(self) -> float:
        return self.duration / 6

    @property
    def every(self) -> float:
        return min(30.0, self.duration / 12)


@dataclass
class Load:
    """What the load threads share: the stop flag, recent task ids and their counters."""

    stop: threading.Event = field(default_factory=threading.Event)
    recent: deque = field(default_factory=lambda: deque(maxlen=20))
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("launched", "api_requests", "api_errors", "socket_events", "disconnects"), 0))
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str) -> None:
        with self.lock:
            self.counts[name] += 1

    def launched(self, task_id: str) -> None:
        self.recent.append(task_id)
        self.add("launched")

    def a_recent_id(self) -> str | None:
        return self.recent[0] if self.recent else None  # sent ~2 s ago: running, or just ended


# ---- the load --------------------------------------------------------------------------------

def send_loop(load: Load, producer, rate: float) -> None:
    """Send tasks from MIX at ``rate`` a second, on a schedule (not sleep(1/rate))."""
    rng = random.Random(7)
    choices, weights = [(name, kwargs) for _w, name, kwargs in MIX], [w for w, _n, _k in MIX]
    start, sent = time.monotonic(), 0
    while not load.stop.is_set():
        name, kwargs = rng.choices(choices, weights)[0]
        load.launched(producer.send_task(name, kwargs=kwargs).id)
        sent += 1
        load.stop.wait(max(0.0, start + sent / rate - time.monotonic()))


def poll_loop(load: Load, url: str) -> None:
    """The API at about 3 requests a second, plus a launch through it every 10 s."""
    session = requests.Session()
    session.headers.update(auth_headers())

    def call(method: str, path: str, **kwargs) -> requests.Response | None:
        load.add("api_requests")
        try:
            response = session.request(method, url + path, timeout=TIMEOUT, **kwargs)
        except requests.RequestException:
            response = None
        if response is None or not response.ok:
            load.add("api_errors")
        return response

    tick = 0
    while not load.stop.wait(1.0):
        tick += 1
        call("GET", "/api/tasks?limit=50")
        call("GET", "/api/tasks/counts")
        if task_id := load.a_recent_id():
            call("GET", f"/api/tasks/{task_id}")
        if tick % 5 == 0:
            call("GET", "/api/overview")
            call("GET", "/api/workers")
        if tick % 10 == 0:
            body = {"name": API_LAUNCH, "kwargs": {"total": 5, "delay": 0.1}}
            launched = call("POST", "/api/tasks", json=body)
            if launched is not None and launched.ok:
                load.launched(launched.json()["id"])
                call("GET", f"/api/tasks/{launched.json()['id']}?wait=10")


def socket_client(load: Load, url: str, dashboard: bool, count_disconnects: bool) -> socketio.Client:
    """A connected client that counts what it receives (and re-subscribes after a reconnection)."""
    client = socketio.Client(reconnection=True)
    client.on("*", lambda event, *data: load.add("socket_events"))
    if dashboard:
        client.on("connect", lambda: client.emit("subscribe", {"dashboard": True}))
    if count_disconnects:
        client.on("disconnect", lambda *reason: load.add("disconnects"))
    client.connect(url, auth={"token": TOKEN}, transports=["websocket"], wait_timeout=TIMEOUT)
    return client


def dashboard_loop(load: Load, url: str) -> None:
    """A dashboard that stays connected until the end."""
    client = socket_client(load, url, dashboard=True, count_disconnects=True)
    load.stop.wait()
    client.disconnect()


def churn_loop(load: Load, url: str) -> None:
    """A dashboard that leaves and comes back every 10 s (sessions and rooms must not pile up)."""
    while not load.stop.is_set():
        client = socket_client(load, url, dashboard=True, count_disconnects=False)
        load.stop.wait(10.0)
        client.disconnect()


def watch_loop(load: Load, url: str) -> None:
    """Join a recent task's room every second and leave it 20 s later."""
    client = socket_client(load, url, dashboard=False, count_disconnects=True)
    joined: deque[tuple[float, str]] = deque()
    while not load.stop.wait(1.0):
        if (task_id := load.a_recent_id()) and client.connected:
            client.call("subscribe", {"task": task_id}, timeout=TIMEOUT)
            joined.append((time.monotonic(), task_id))
        while joined and joined[0][0] < time.monotonic() - 20 and client.connected:
            client.emit("unsubscribe", {"task": joined.popleft()[1]})
    client.disconnect()


def start_load(load: Load, producer, url: str, rate: float) -> list[threading.Thread]:
    loops: list[tuple[Callable, tuple]] = [
        (send_loop, (load, producer, rate)), (poll_loop, (load, url)), (dashboard_loop, (load, url)),
        (dashboard_loop, (load, url)), (churn_loop, (load, url)), (watch_loop, (load, url))]
    threads = [threading.Thread(target=guarded, args=(load, loop, args), name=loop.__name__, daemon=True)
               for loop, args in loops]
    for thread in threads:
        thread.start()
    return threads


def guarded(load: Load, loop: Callable, args: tuple) -> None:
    """Run ``loop``; an exception ends only that loop and is reported at the end."""
    try:
        loop(*args)
    except Exception:
        load.errors.append(f"{loop.__name__}: {traceback.format_exc()}")


# ---- the samples -----------------------------------------------------------------------------

def processes(running: Stack) -> dict[str, int]:
    """Name -> PID of every process to watch: the prefork worker's pool children by name too."""
    pids = {"web": running.procs["web"].pid, "redis": running.procs["redis"].pid}
    for name in ("prefork", "threads"):
        pids[name] = running.procs[name].pid
        for number, child in enumerate(children(pids[name]), 1):
            pids[f"{name}.{number}"] = child
    return pids


def children(pid: int) -> list[int]:
    return sorted(int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def done_count(url: str) -> int | None:
    """Tasks the monitor saw end (task-succeeded plus task-failed events), from /metrics."""
    try:
        text = requests.get(f"{url}/metrics", headers=auth_headers(), timeout=TIMEOUT).text
    except requests.RequestException:
        return None
    return int(sum(float(value) for value in DONE.findall(text)))


def take_sample(t: float, pids: dict[str, int], client: redis.Redis, url: str, load: Load) -> dict:
    """One row: RSS per process (None if it is gone), Redis's figures, the load's counters."""
    row: dict = {"t": round(t)}
    for name, pid in pids.items():
        row[f"{name}_rss_mib"] = round(rss_mb(pid, children=False), 1) if alive(pid) else None
    try:
        row["redis_used_mib"] = round(client.info("memory")["used_memory"] / 2**20, 2)
        row["redis_keys"] = client.dbsize()
        row["records"] = client.zcard("pulse:i:all")
        row["queue"] = client.llen("celery")
    except redis.RedisError:
        row.update(redis_used_mib=None, redis_keys=None, records=None, queue=None)
    row["done"] = done_count(url)
    with load.lock:
        row.update(load.counts)
    return row


# ---- the report ------------------------------------------------------------------------------

COLUMNS = (("t", "t s"), ("redis_used_mib", "used MiB"), ("redis_keys", "keys"), ("records", "records"),
           ("queue", "queue"), ("launched", "sent"), ("done", "done"), ("api_errors", "api err"),
           ("disconnects", "disc"))


def header(pids: dict[str, int]) -> list[tuple[str, str]]:
    return [COLUMNS[0], *((f"{n}_rss_mib", n) for n in pids), *COLUMNS[1:]]


def line(columns: list[tuple[str, str]], row: dict | None = None) -> str:
    def cell(key: str, title: str) -> str:
        text = title if row is None else "-" if row[key] is None else f"{row[key]:,}"
        return text.rjust(max(len(title), 8))

    return "  ".join(cell(key, title) for key, title in columns)


def slope_per_hour(rows: list[dict], key: str) -> float:
    """Least-squares trend of ``key`` over ``rows``, per hour."""
    points = [(r["t"], r[key]) for r in rows if r[key] is not None]
    if len(points) < 2:
        return float("nan")
    mean_t = sum(t for t, _ in points) / len(points)
    mean_v = sum(v for _, v in points) / len(points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread * 3600 if spread else float("nan")


def verdict(rows: list[dict], pids: dict[str, int], warmup: float) -> list[str]:
    """One line per memory figure: its value at the end of the warm-up and at the end, the growth,
    and its trend over that window and over the window's second half (a leak keeps a slope there;
    a high-water mark still being reached at the warm-up's end does not)."""
    after = [r for r in rows if r["t"] >= warmup]
    base, end, half = after[0], after[-1], after[len(after) // 2:]
    out = [f"growth from t={base['t']} s to t={end['t']} s ({end['done'] - base['done']:,} tasks done); "
           f"flat: within {TOLERANCE_MIB:g} MiB or {TOLERANCE_SHARE:.0%}, whichever is larger",
           f"  {'figure':<22} {'start':>8}    {'end':>8}      {'growth':>19}  {'trend MiB/h':>11}  "
           f"{'2nd half':>8}  {'peak':>8}"]
    figures = [*((f"{n}_rss_mib", f"{n} RSS") for n in pids), ("redis_used_mib", "Redis used_memory")]
    for key, title in figures:
        growth = end[key] - base[key]
        flat = growth <= max(TOLERANCE_MIB, TOLERANCE_SHARE * base[key])
        out.append(f"  {title:<22} {base[key]:8.1f} -> {end[key]:8.1f} MiB  {growth:+6.1f} MiB "
                   f"({growth / base[key]:+6.1%})  {slope_per_hour(after, key):+11.1f}  "
                   f"{slope_per_hour(half, key):+8.1f}  {max(r[key] for r in after):8.1f}  "
                   f"{'flat' if flat else 'NOT FLAT'}")
    for key in ("redis_keys", "records", "queue"):
        out.append(f"  {key:<22} {base[key]:8,} -> {end[key]:8,}  (peak {max(r[key] for r in after):,})")
    return out


def write_csv(rows: list[dict]) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


# ---- the run ---------------------------------------------------------------------------------

def env_for(plan: Plan) -> dict[str, str]:
    return {
        "PULSE_RETENTION": str(plan.retention),
        "PULSE_PRUNE_INTERVAL": str(plan.prune_every),
        "CELERY_CONFIG_MODULE": "bench.soak_celeryconfig",
        "PULSE_SOAK_RESULT_EXPIRES": str(2 * plan.retention),
        "PULSE_LAUNCH_ALLOW": ",".join(sorted({name for _w, name, _k in MIX} | {API_LAUNCH})),
    }


def start(running: Stack) -> None:
    """Both workers, then the server; returns once its monitor listens."""
    running.start_worker("prefork", pool="prefork", concurrency=2)
    running.start_worker("threads", pool="threads", concurrency=4)
    running.wait_worker("prefork")
    running.wait_worker("threads")
    url = running.start_web()

    def listening() -> bool:
        return requests.get(f"{url}/healthz", timeout=TIMEOUT).json()["monitor"]["connected"]

    wait_until(listening, 60, 0.5, "the server's monitor connected")


def soak(plan: Plan) -> tuple[list[dict], dict[str, int], list[str]]:
    """Run the stack under load for ``plan.duration``, sampling; returns samples, processes, problems."""
    from tasks.celery import make_celery

    problems: list[str] = []
    rows: list[dict] = []
    with stack("soak", **env_for(plan)) as running:
        start(running)
        pids = processes(running)
        producer = make_celery(running.env)
        use_lookup_only_backend(producer)  # the stock backend would subscribe to every task's result
        client = redis.Redis.from_url(running.redis_url)
        load = Load()
        columns = header(pids)
        print(line(columns), flush=True)
        began = time.monotonic()
        threads = start_load(load, producer, running.web_url, plan.rate)
        while True:
            t = time.monotonic() - began
            rows.append(take_sample(t, pids, client, running.web_url, load))
            print(line(columns, rows[-1]), flush=True)
            problems = died(running, pids)
            if problems or t >= plan.duration:
                break
            time.sleep(max(0.0, min(plan.every * len(rows), plan.duration) - (time.monotonic() - began)))
        load.stop.set()
        for thread in threads:
            thread.join(TIMEOUT)
        problems += drained(running.web_url, load) + load.errors
        client.close()
    return rows, pids, problems


def died(running: Stack, pids: dict[str, int]) -> list[str]:
    """Processes of the stack that exited, and pool processes that were replaced."""
    gone = [f"{name} (pid {pid}) exited" for name, pid in pids.items() if not alive(pid)]
    for name in ("prefork", "threads"):
        now = children(pids[name]) if alive(pids[name]) else []
        before = sorted(pid for key, pid in pids.items() if key.startswith(f"{name}."))
        if now != before:
            gone.append(f"{name}'s pool processes changed: {before} -> {now}")
    return gone


def drained(url: str, load: Load) -> list[str]:
    """Wait (up to 60 s) until the monitor saw every task sent end; report those it did not."""
    launched = load.counts["launched"]
    try:
        wait_until(lambda: (done_count(url) or 0) >= launched, 60, 1.0, "every task done")
    except TimeoutError:
        return [f"{launched - (done_count(url) or 0)} of {launched} tasks sent never ended on the monitor"]
    return []


def report(rows: list[dict], pids: dict[str, int], plan: Plan, problems: list[str]) -> int:
    path = write_csv(rows) if rows else None
    missing = [f"t={r['t']}: {k}" for r in rows for k, v in r.items() if v is None]
    if missing:
        problems.append(f"figures missing: {', '.join(missing[:10])}")
    if len([r for r in rows if r["t"] >= plan.warmup]) < 2:
        problems.append("fewer than two samples after the warm-up: no verdict")
    elif not missing:
        print("\n" + "\n".join(verdict(rows, pids, plan.warmup)))
    print(f"\nsamples: {path}" if path else "\nno samples")
    print(f"retention {plan.retention} s, Celery results kept {2 * plan.retention} s, "
          f"rate {plan.rate:g} tasks/s, duration {plan.duration:g} s")
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds of load (default 3600)")
    parser.add_argument("--rate", type=float, default=10.0, help="tasks sent per second (default 10)")
    args = parser.parse_args(argv)
    if args.duration < 60 or args.rate <= 0:
        parser.error("--duration is at least 60 s and --rate positive")
    plan = Plan(args.duration, args.rate)
    rows, pids, problems = soak(plan)
    return report(rows, pids, plan, problems)


if __name__ == "__main__":
    sys.exit(main())
