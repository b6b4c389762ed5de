"""Benchmark 4, fan-out: 1,000 Socket.IO clients on the dashboard room, 200 tasks reporting 4 times a second.

Setup: an embedded Redis, the real server (eventlet), a real worker (thread pool, one thread per
task) running ``bench.report`` tasks that report every 0.25 s with the call's wall time as the
message, and the clients: two subprocesses of ``bench.fanout_client`` (asyncio + aiohttp's
websocket client speaking Engine.IO v4 / Socket.IO v5, 500 clients each), all in the dashboard
room. They offer permessage-deflate as browsers do (``DEFLATE``); the server decides. Clients
connect first, then the tasks start; after a warm-up the window opens.

Measured over the window:
- delivery lag: receipt time in a client minus the progress call's wall time, for every (client,
  call) pair. A ``tasks`` push carries each changed task once, its newest change, so "every one"
  and "the freshest per task" are the same; a call is counted on the first push that carries it.
  p50 and p99 across all clients.
- pipeline lag: the same calls in 20 task rooms, watched by one more connection (which is also in
  the dashboard room): no coalescing, no fan-out, so the worker, Redis and the monitor alone.
- server CPU: the web server's CPU seconds over the window / wall seconds (100% = one core).
- peak RSS of the server (VmHWM, its whole life, connections included).
- disconnects: clients that failed to connect or dropped before the end.
- client CPU the same way, and how late the clients' event loops woke up (p99): if the clients
  were the bottleneck it shows there.

Then the same load on two servers (each with its own monitor, as README "Several servers" runs
them), the client processes split between them: the rows whose names end in ", 2 servers".

Quick: 50 clients in one process (two on two servers), 20 tasks, a 5 s window.
"""

import contextlib
import json
import math
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from . import harness
from .harness import Row

BENCH = "4 fan-out"
TARGET_LAG = 0.250
DEFLATE = True
INTERVAL = 0.25  # seconds between a task's progress calls: 4 a second


@dataclass(frozen=True)
class Size:
    clients: int
    processes: int
    tasks: int
    warmup: float
    window: float
    probes: int  # task rooms one extra connection watches, for the pipeline's own lag


FULL = Size(clients=1000, processes=2, tasks=200, warmup=4.0, window=20.0, probes=20)
QUICK = Size(clients=50, processes=1, tasks=20, warmup=1.5, window=5.0, probes=5)


def run(quick: bool) -> list[Row]:
    size = QUICK if quick else FULL
    # The same load on two servers, each with half the clients (README, "Several servers").
    return [*measure(size, servers=1), *measure(replace(size, processes=max(2, size.processes)), servers=2)]


def measure(size: Size, servers: int) -> list[Row]:
    with harness.stack("fanout" if servers == 1 else f"fanout{servers}") as running:
        names = ["web", *(f"web{number}" for number in range(2, servers + 1))]
        urls = [running.start_web(name) for name in names]
        # Throttle below the task's interval, so every call is sent.
        running.start_worker(pool="threads", concurrency=size.tasks, PULSE_PROGRESS_INTERVAL="0.05")
        running.wait_worker()
        webs = {("server" if n == 0 else f"server {n + 1}"): running.procs[name].pid
                for n, name in enumerate(names)}
        clients = start_clients(running, size, urls)
        try:
            ready = [wait_ready(proc) for proc in clients]
            submit(running, size)
            time.sleep(size.warmup)
            pids = {**webs, "worker": running.procs["worker"].pid, "redis": running.procs["redis"].pid,
                    **{f"clients {n}": proc.pid for n, proc in enumerate(clients)}}
            usage = Usage(pids)
            for proc in clients:
                tell(proc, "go")
            time.sleep(size.window)
            for proc in clients:
                tell(proc, "stop")
            cpu = usage.read()
            results = [result_of(proc) for proc in clients]
            peak = max(peak_rss_mb(pid) for pid in webs.values())
        finally:
            for proc in clients:
                stop(proc)
    return rows(size, ready, results, cpu, peak, servers)


class Usage:
    """CPU used over the window by each of our processes, and by the whole machine."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = {name: harness.cpu_seconds(pid) for name, pid in pids.items()}
        self.machine, self.began = machine_busy(), time.monotonic()

    def read(self) -> dict[str, float]:
        """Fractions of one core; "machine" is every process's, others' included."""
        wall = time.monotonic() - self.began
        out = {name: (harness.cpu_seconds(pid) - self.start[name]) / wall for name, pid in self.pids.items()}
        out["machine"] = (machine_busy() - self.machine) / wall
        return out


def machine_busy() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: everything but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def start_clients(running: harness.Stack, size: Size, urls: list[str]) -> list[subprocess.Popen]:
    """The client processes, the n-th on the n-th server (round robin)."""
    procs = []
    for number in range(size.processes):
        count = size.clients // size.processes + (number < size.clients % size.processes)
        url = urls[number % len(urls)]
        cmd = [sys.executable, "-m", "bench.fanout_client", "--url", url, "--clients", str(count),
               "--token", harness.TOKEN, *(["--deflate"] if DEFLATE else []),
               "--probe", str(size.probes if number == 0 else 0)]
        procs.append(subprocess.Popen(cmd, cwd=harness.ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=running.log(f"fanout-clients-{number}"), text=True,
                                      start_new_session=True))
    return procs


def wait_ready(proc: subprocess.Popen, timeout: float = 120.0) -> dict:
    line = read_line(proc, timeout)
    if not line.startswith("ready "):
        raise RuntimeError(f"fan-out clients did not get ready: {line[:200]!r}; see bench-artifacts/")
    return json.loads(line[len("ready "):])


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    """One line of ``proc``'s stdout, or "" after ``timeout`` (a thread: pipes have no timeout)."""
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return out[0].strip() if out else ""


def tell(proc: subprocess.Popen, line: str) -> None:
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.write(line + "\n")
        proc.stdin.flush()


def result_of(proc: subprocess.Popen) -> dict:
    line = read_line(proc, 120.0)
    return json.loads(line) if line.startswith("{") else {}


def stop(proc: subprocess.Popen) -> None:
    from pulse import devstack

    with contextlib.suppress(OSError):
        proc.stdin.close()
    devstack.stop(proc, timeout=5.0)


def submit(running: harness.Stack, size: Size) -> None:
    from tasks.celery import make_celery

    app = make_celery(running.env)
    # Long enough to outlast the warm-up, the window and the clients' grace.
    updates = math.ceil((size.warmup + size.window + 5.0) / INTERVAL)
    for _ in range(size.tasks):
        app.send_task("bench.report", kwargs={"updates": updates, "interval": INTERVAL})


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def lag_percentiles(results: list[dict], key: str = "lags_ms") -> tuple[float, float, int]:
    """p50 and p99 in seconds from the clients' merged 1 ms histograms, and the sample count."""
    merged: dict[int, int] = {}
    for result in results:
        for lag, count in result.get(key, {}).items():
            merged[int(lag)] = merged.get(int(lag), 0) + count
    total = sum(merged.values())
    if not total:
        return float("nan"), float("nan"), 0

    def rank(q: float) -> float:
        wanted, seen = max(1, round(q * total)), 0
        for lag in sorted(merged):
            seen += merged[lag]
            if seen >= wanted:
                return lag / 1000
        return max(merged) / 1000

    return rank(0.50), rank(0.99), total


def cpu_note(cpu: dict[str, float]) -> str:
    """Who else used the machine's cores over the window: a starved server shows here."""
    pct = {name: round(value * 100) for name, value in cpu.items()}
    ours = sum(value for name, value in pct.items() if name != "machine")
    clients = sum(value for name, value in pct.items() if name.startswith("clients"))
    servers = "+".join(str(value) for name, value in pct.items() if name.startswith("server"))
    return (f"over the window, in % of a core: server(s) {servers}, worker {pct['worker']}, "
            f"Redis {pct['redis']}, "
            f"clients {clients}; all {os.cpu_count()} cores together {pct['machine']} busy, "
            f"{max(0, pct['machine'] - ours)} of it other processes")


def inbound(results: list[dict], window: float) -> float:
    """Characters a second one client received: the tasks pushes plus every other event."""
    connected = sum(r.get("connected", 0) for r in results)
    if not connected:
        return float("nan")
    per_client = max((r.get("frame_chars", 0) for r in results), default=0)
    others = sum(sum(r.get("other_chars", {}).values()) for r in results) / connected
    return (per_client + others) / window


def rows(size: Size, ready: list[dict], results: list[dict], cpu: dict[str, float], peak: float,
         servers: int = 1) -> list[Row]:
    p50, p99, samples = lag_percentiles(results)
    probe50, probe99, probes = lag_percentiles(results, "probe_lags_ms")
    failed = sum(r.get("failed", 0) for r in ready)
    dropped = sum(r.get("dropped", 0) for r in results)
    missing = len(results) - sum(1 for r in results if r)
    disconnects = failed + dropped if not missing else float("nan")
    pushes = max((r.get("pushes", 0) for r in results), default=0)
    missed = sum(r.get("missed", 0) for r in results)
    frame = sum(r.get("frame_chars", 0) for r in results) / max(1, sum(r.get("pushes", 0) for r in results))
    wall = max((r.get("wall_seconds", 0.0) for r in results), default=0.0)
    client_cpu = sum(value for name, value in cpu.items() if name.startswith("clients"))
    server_cpu = sum(value for name, value in cpu.items() if name.startswith("server"))
    on = "" if servers == 1 else f", {servers} servers"  # the two-server rows' names say so
    loop_lag = max((r.get("loop_lag_p99_ms", float("nan")) for r in results), default=float("nan"))
    seconds = wall or size.window
    setup = (f"{size.clients} clients in {size.processes} process(es) on {servers} server(s), "
             f"{size.tasks} tasks x 4/s, "
             f"{seconds:.0f} s window, deflate {'offered' if DEFLATE else 'not offered'}")
    calls = max((r.get("calls", 0) for r in results), default=0)
    lag_note = (f"{setup}; {samples:,} (client, call) pairs: {calls / seconds:.0f} of the "
                f"{size.tasks * 4} calls a second reached the dashboard (a batch keeps each task's newest), "
                f"{pushes / seconds:.1f} tasks pushes a second of {frame / 1024:.1f} KiB on average; "
                f"a client received {inbound(results, seconds) / 1024:.0f} KiB/s in all")
    connect = max((r.get("seconds", 0.0) for r in ready), default=float("nan"))
    errors = {k: v for r in results + ready for k, v in r.get("errors", {}).items()}
    return [
        Row(BENCH, f"delivery lag p50{on}", p50 * 1000, "ms", note=lag_note),
        Row(BENCH, f"delivery lag p99{on}", p99 * 1000, "ms", target="p99 < 250 ms",
            met=None if math.isnan(p99) else p99 < TARGET_LAG),
        Row(BENCH, f"pipeline lag p99 (task room){on}", probe99 * 1000, "ms",
            note=f"the same calls' lag in {size.probes} task rooms (no coalescing, one client): "
                 f"worker, Redis and monitor alone; p50 {probe50 * 1000:.0f} ms over {probes:,} calls"),
        Row(BENCH, f"server CPU{on}" + (" (together)" if on else ""), server_cpu * 100, "% of a core",
            note=cpu_note(cpu)),
        Row(BENCH, f"server peak RSS{on}" + (" (the larger)" if on else ""), peak, "MiB"),
        Row(BENCH, f"disconnects{on}", disconnects, "clients", target="0", met=None if math.isnan(disconnects)
            else disconnects == 0,
            note=f"{failed} failed to connect (all connected in {connect:.1f} s), {dropped} dropped; "
                 f"{missed} deliveries still missing 1 s after the window"
                 + (f", errors {errors}" if errors else "")
                 + (f"; {missing} client process(es) printed nothing" if missing else "")),
        Row(BENCH, f"client CPU{on}", client_cpu * 100, "% of a core",
            note=f"clients' event loop woke up late by {loop_lag:.1f} ms at p99"),
    ]
