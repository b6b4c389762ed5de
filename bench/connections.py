"""Benchmark 9: the server under a connection-exhaustion attack from one address (issue 14).

Setup: an embedded Redis and the real server (eventlet). A task in this process (run eagerly)
reports progress 10 times a second with its wall time as the message; a dashboard client
(python-socketio, websocket, from 127.0.0.1) watches its room, and one client asks ``/healthz``
on a kept-alive session every 0.1 s. The attack, from 127.0.0.2 (another client address on
loopback): 1,100 idle connections that never send a byte, and 200 slowloris connections that
send a request line and then one header byte every 0.5 s, opened as fast as the kernel allows.

Two rounds, each on a fresh server:
- ``defaults``: every setting at its default (header timeout 10 s, 200 connections per address):
  the address's first 200 connections are held until the header deadline, the rest refused.
- ``no address cap`` (``PULSE_MAX_CONNECTIONS_PER_ADDRESS=0``): all 1,300 held until the header
  deadline, to read what a held connection costs (server RSS with them, minus before).

Measured from the first attacking connection: ``/healthz`` wall time p50/p99/max (beside the
same client's figures in the second before the attack); push delay (receipt minus the progress
call's wall time) p50/p99/max, and the longest gap between pushes; how long until the server
had closed every attacking connection; the server's RSS before and at its peak during the
attack. Quick: 110 idle + 20 slowloris, header timeout 2 s, 20 per address.
"""

import socket
import threading
import time
import uuid

import requests
import socketio

from pulse.settings import load_config

from .harness import TOKEN, Row, Stack, percentiles, rss_mb, stack, wait_until

BENCH = "9 connections"
ATTACKER = "127.0.0.2"


class Attack:
    """The attacking connections, and when the server ended each one."""

    def __init__(self, port: int, idle: int, slow: int) -> None:
        self.port, self.idle, self.slow_count = port, idle, slow
        self.sockets: list[socket.socket] = []
        self.slow: set[int] = set()
        self.ended: dict[int, float] = {}
        self.refused = 0
        self.unconnected = 0
        self.stopping = threading.Event()

    def open(self) -> None:
        for number in range(self.slow_count + self.idle):
            sock = socket.socket()
            sock.bind((ATTACKER, 0))
            sock.settimeout(3)
            try:
                sock.connect(("127.0.0.1", self.port))
            except OSError:
                sock.close()
                self.unconnected += 1
                continue
            sock.setblocking(False)
            if number < self.slow_count:
                try:
                    sock.send(b"GET /healthz HTTP/1.1\r\nHost: pulse\r\n")
                    self.slow.add(sock.fileno())
                except OSError:
                    pass
            self.sockets.append(sock)

    def run(self) -> None:
        while not self.stopping.is_set() and len(self.ended) < len(self.sockets):
            for sock in list(self.sockets):
                fileno = sock.fileno()
                if fileno in self.ended:
                    continue
                if fileno in self.slow:
                    try:
                        sock.send(b"X")
                    except OSError:
                        pass
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                self.refused += data.startswith(b"HTTP/1.1 503")
                self.ended[fileno] = time.monotonic()
            self.stopping.wait(0.5)

    def close(self) -> None:
        self.stopping.set()
        for sock in self.sockets:
            sock.close()


class Watch(threading.Thread):
    """/healthz every 0.1 s on one kept-alive session: (started, wall seconds or None) each."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.calls: list[tuple[float, float | None]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        with requests.Session() as session:
            while not self.stopping.is_set():
                began = time.monotonic()
                try:
                    ok = session.get(self.base + "/healthz", timeout=10).ok
                except requests.RequestException:
                    ok = False
                self.calls.append((began, time.monotonic() - began if ok else None))
                self.stopping.wait(max(0.0, began + 0.1 - time.monotonic()))


def reporter(running: Stack, task_id: str, stop: threading.Event) -> threading.Thread:
    """A task of this process reporting 10 times a second, the wall time as its message."""
    from pulse.agent.progress import report_progress
    from tasks.celery import make_celery

    app = make_celery({**running.env, "PULSE_PROGRESS_INTERVAL": "0"})

    @app.task(bind=True, shared=False, name="bench.connections.report")
    def report(self):
        number = 0
        while not stop.is_set():
            number += 1
            report_progress(self, number, None, repr(time.time()))
            stop.wait(0.1)

    thread = threading.Thread(target=report.apply, kwargs={"task_id": task_id}, daemon=True)
    thread.start()
    return thread


def attack_round(running: Stack, name: str, idle: int, slow: int, window: float, **env: str) -> dict:
    base = running.start_web(name, **env)
    port = int(base.rsplit(":", 1)[1])
    pid = running.procs[name].pid
    wait_until(lambda: requests.get(base + "/healthz", timeout=5).json()["monitor"]["connected"], 30,
               0.1, "the monitor")
    task_id = f"conn-{uuid.uuid4().hex[:8]}"
    pushes: list[tuple[float, float]] = []  # (received at, monotonic; delay s)
    client = socketio.Client(reconnection=False)
    client.on("task", lambda task: pushes.append(
        (time.monotonic(), time.time() - float((task.get("progress") or {}).get("message") or "nan"))))
    client.connect(base, auth={"token": TOKEN}, transports=["websocket"], wait_timeout=10)
    client.call("subscribe", {"task": task_id}, timeout=10)
    stop = threading.Event()
    thread = reporter(running, task_id, stop)
    watch = Watch(base)
    attack = Attack(port, idle, slow)
    reader = threading.Thread(target=attack.run, daemon=True)
    try:
        wait_until(lambda: len(pushes) > 5, 30, 0.1, "pushes")
        watch.start()
        time.sleep(1.0)  # the baseline: the same client, before the attack
        rss_before = rss_mb(pid)
        started = time.monotonic()
        attack.open()
        opened = time.monotonic() - started
        reader.start()
        peak = rss_before
        deadline = started + window
        while time.monotonic() < deadline and len(attack.ended) < len(attack.sockets):
            peak = max(peak, rss_mb(pid))
            time.sleep(0.2)
        closed_after = (max(attack.ended.values()) - started
                        if attack.sockets and len(attack.ended) == len(attack.sockets) else float("nan"))
        connected = client.connected
    finally:
        watch.stopping.set()
        stop.set()
        attack.close()
        for worker in (watch, thread, reader):
            if worker.is_alive():
                worker.join(10)
        client.disconnect()
        running.stop(name)
    before = [s for at, s in watch.calls if at < started and s is not None]
    during = [s for at, s in watch.calls if at >= started]
    failed = sum(1 for s in during if s is None)
    window_pushes = [(at, delay) for at, delay in pushes if at >= started]
    times = [started, *(at for at, _ in window_pushes)]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return {"before": before, "during": [s for s in during if s is not None], "failed": failed,
            "delays": [delay for _, delay in window_pushes], "gap": max(gaps, default=float("nan")),
            "closed_after": closed_after, "opened": opened, "rss_before": rss_before, "rss_peak": peak,
            "held": len(attack.sockets) - attack.refused, "refused": attack.refused,
            "attackers": len(attack.sockets), "unconnected": attack.unconnected, "connected": connected}


def run(quick: bool) -> list[Row]:
    idle, slow = (110, 20) if quick else (1100, 200)
    # The defaults, named: the harness turns the cap off for the other benchmarks' clients.
    default_cap = str(load_config({"PULSE_TOKEN": "x" * 16})["MAX_CONNECTIONS_PER_ADDRESS"])
    env = {"PULSE_HEADER_TIMEOUT": "2", "PULSE_MAX_CONNECTIONS_PER_ADDRESS": "20"} if quick else \
        {"PULSE_MAX_CONNECTIONS_PER_ADDRESS": default_cap}
    window = 15.0 if quick else 60.0
    with stack("connections") as running:
        defaults = attack_round(running, "web", idle, slow, window, **env)
        open_cap = attack_round(running, "web-nocap", idle, slow, window,
                                **{**env, "PULSE_MAX_CONNECTIONS_PER_ADDRESS": "0"})
    return rows(defaults, "defaults" if not quick else "quick settings", idle, slow) + \
        rows(open_cap, "no address cap", idle, slow)


def rows(result: dict, label: str, idle: int, slow: int) -> list[Row]:
    out = []
    health, base = percentiles(result["during"]), percentiles(result["before"])
    push = percentiles(result["delays"])
    note = (f"{idle:,} idle + {slow} slowloris from {ATTACKER} opened in {result['opened']:.1f} s "
            f"({result['unconnected']} could not connect); {result['refused']} refused with 503 at once, "
            f"{result['held']} held until the header deadline; {len(result['during'])} /healthz calls "
            f"during the attack, {result['failed']} failed; dashboard still connected: {result['connected']}")
    for key in ("p50", "p99", "max"):
        out.append(Row(BENCH, f"healthz {key}, {label}", health[key] * 1000, "ms", base[key] * 1000,
                       "no attack", target="p99 < 1000 ms" if key == "p99" else "",
                       met=(health["p99"] < 1.0 and not result["failed"]) if key == "p99" else None,
                       note=note if key == "p50" else ""))
    for key in ("p50", "p99", "max"):
        out.append(Row(BENCH, f"push delay {key}, {label}", push[key] * 1000, "ms"))
    out.append(Row(BENCH, f"longest push gap, {label}", result["gap"] * 1000, "ms"))
    out.append(Row(BENCH, f"attack closed after, {label}", result["closed_after"], "s", target="< 60 s",
                   met=result["closed_after"] < 60))
    per_held = (result["rss_peak"] - result["rss_before"]) * 1024 / max(1, result["held"])
    out.append(Row(BENCH, f"server RSS peak, {label}", result["rss_peak"], "MiB", result["rss_before"],
                   "before", note=f"{per_held:.0f} KiB per held connection"))
    return out
