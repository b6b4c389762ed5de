"""What every benchmark shares: real processes, percentiles, process readings and result rows.

A benchmark module exposes ``run(quick: bool) -> list[Row]``; ``bench/run.py`` runs them in order
and prints one table. Processes are started with ``pulse.devstack`` (each in its own process
group, stopped by PID) and log into ``bench-artifacts/``.
"""

import contextlib
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pulse import devstack

ROOT = devstack.ROOT
ARTIFACTS = ROOT / "bench-artifacts"
TOKEN = "bench-operator-token-0123456789"
# Lifted for every benchmark's Redis, Pulse's and Flower's alike: with Redis's default (32 MB
# hard limit), a subscriber that falls behind a full-speed replay is disconnected, and the
# benchmark would measure that limit instead of the consumer.
PUBSUB_UNLIMITED = ("--client-output-buffer-limit", "pubsub", "0", "0", "0")


@dataclass
class Row:
    """One figure of the table: Pulse's value, the competitor's beside it, and the target."""

    bench: str
    metric: str
    pulse: float | None
    unit: str
    other: float | None = None
    competitor: str = ""
    target: str = ""
    met: bool | None = None
    note: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99 and max of ``values`` (nearest rank); NaN for an empty sequence."""
    if not values:
        return dict.fromkeys(("p50", "p95", "p99", "max"), float("nan"))
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]

    return {"p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99), "max": ordered[-1]}


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def rss_mb(pid: int, children: bool = True) -> float:
    """Resident memory of ``pid`` (and its descendants) in MiB, read from /proc."""
    total = 0
    for one in [pid, *(_descendants(pid) if children else [])]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time consumed by ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        with contextlib.suppress(OSError):
            for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
                found.append(int(child))
                frontier.append(int(child))
    return found


@dataclass
class Stack:
    """Running processes of one benchmark and how to reach them."""

    name: str
    data: Path
    env: dict[str, str]
    redis_url: str = ""
    redis_port: int = 0
    web_url: str = ""
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: list = field(default_factory=list)

    def log(self, name: str):
        """A log file for a process, named after this stack so benchmarks never share one."""
        ARTIFACTS.mkdir(exist_ok=True)
        if not name.startswith(f"{self.name}-"):
            name = f"{self.name}-{name}"
        handle = open(ARTIFACTS / f"{name}.log", "w")  # noqa: SIM115 - closed in stack()
        self.logs.append(handle)
        return handle

    def start_web(self, name: str = "web", **extra: str) -> str:
        port = devstack.free_port()
        # Every simulated client comes from 127.0.0.1: no cap per address (a benchmark that
        # measures the cap, bench/connections.py, sets its own).
        env = dict(self.env, PORT=str(port), HOST="127.0.0.1",
                   **{"PULSE_MAX_CONNECTIONS_PER_ADDRESS": "0", **extra})
        self.procs[name] = devstack.start_web(env, port, log=self.log(name))
        url = f"http://127.0.0.1:{port}"
        if name == "web":
            self.web_url = url
        return url

    def start_worker(self, name: str = "worker", pool: str = "prefork", concurrency: int = 2,
                     **extra: str) -> subprocess.Popen:
        """A real worker of ``bench.tasks`` (Pulse's demo tasks plus the benchmarks' own)."""
        env = dict(self.env, **extra)
        proc = devstack.start_worker(env, concurrency=concurrency, log=self.log(name), name=name, pool=pool,
                                     app="bench.tasks")
        self.procs[name] = proc
        return proc

    def wait_worker(self, name: str = "worker", timeout: float = 60.0) -> None:
        """Wait until the worker answers a ping."""
        from tasks.celery import make_celery

        app = make_celery(self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replies = app.control.ping(timeout=0.5) or []
            if any(name in host for reply in replies for host in reply):
                return
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited; see bench-artifacts/{self.name}-{name}.log")
        raise TimeoutError(f"{name} did not answer a ping within {timeout:.0f}s")

    def stop(self, name: str) -> None:
        devstack.stop(self.procs.pop(name))


@contextlib.contextmanager
def stack(name: str, redis_args: Sequence[str] = PUBSUB_UNLIMITED, **env: str) -> Iterator[Stack]:
    """An embedded Redis on a free loopback port; the benchmark starts the rest on it."""
    with tempfile.TemporaryDirectory(prefix=f"pulse-bench-{name}-") as data:
        running = Stack(name, Path(data), {})
        try:
            port = devstack.free_port()
            command = devstack.redis_command(port, Path(data) / "redis") + list(redis_args)
            proc = subprocess.Popen(command, stdout=running.log(f"{name}-redis"), stderr=subprocess.STDOUT,
                                    start_new_session=True)
            running.procs["redis"] = proc
            devstack.wait_for_port(port, proc, what="redis-server")
            running.redis_port, running.redis_url = port, f"redis://127.0.0.1:{port}/0"
            running.env = dict(os.environ, REDIS_URL=running.redis_url, PULSE_TOKEN=TOKEN,
                               PULSE_DATA_DIR=data, **env)
            yield running
        finally:
            for proc in reversed(list(running.procs.values())):
                devstack.stop(proc)
            for handle in running.logs:
                handle.close()


def wait_until(check, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll ``check`` until it returns something truthy; raise TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout:.0f}s")


def auth_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def log_in(session, base: str, token: str = TOKEN) -> None:
    """Log ``session`` (requests) in through the login form, its CSRF token first, as a browser does."""
    form = session.get(f"{base}/login", timeout=10).text.split('id="login-form"', 1)[1]
    csrf = form.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    session.post(f"{base}/login", data={"token": token, "csrf_token": csrf}, timeout=10).raise_for_status()
