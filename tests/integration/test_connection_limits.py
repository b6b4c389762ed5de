"""Connection exhaustion, against the real server (eventlet): idle and slowloris connections from
one address, Engine.IO sessions that never connect, and long polls (issue 14, item 3).

The attacker's sockets are bound to 127.0.0.2 and the legitimate clients connect from 127.0.0.1:
on loopback that makes them two client addresses, as an attacker and a user on the Internet
would be, without a second machine. Timeouts are short here so the test is quick; the attack is
the issue's size (1,100 idle plus 200 slowloris connections).
"""

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests
import websocket

from pulse.agent.progress import report_progress

from ..conftest import ARTIFACTS, TOKEN, Stack, db_url, flush_db, own_server, producer_app, wait_until

pytestmark = pytest.mark.integration

DB = 11  # shared with other modules, each flushing it first
ATTACKER = "127.0.0.2"
IDLE, SLOWLORIS = 1100, 200
HEADER_TIMEOUT = 2.0
CLOSED_WITHIN = 60.0  # the bound on the server closing the attacker's connections
VIEWER = "test-viewer-token-0123456789"
LOG = ARTIFACTS / "web-connections.log"


@pytest.fixture(scope="module")
def stack(redis_url) -> Iterator[Stack]:
    url = db_url(redis_url, DB)
    flush_db(url)
    with own_server(url, "web-connections", PULSE_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
                    PULSE_KEEPALIVE_TIMEOUT="3", PULSE_CONNECT_TIMEOUT="1",
                    PULSE_MAX_WAITS_PER_CREDENTIAL="2", PULSE_VIEWER_TOKEN=VIEWER) as (_, running):
        yield running


@contextmanager
def reporting(stack: Stack, task_id: str, interval: float = 0.1) -> Iterator[threading.Event]:
    """A task of this process (run eagerly) reporting progress every ``interval`` s until the
    yielded event is set; the monitor turns each report into pushes."""
    stop = threading.Event()
    with producer_app({**stack.env, "PULSE_PROGRESS_INTERVAL": "0"}) as app:
        @app.task(bind=True, shared=False, name="limits.report")
        def report(self):
            number = 0
            while not stop.is_set():
                number += 1
                report_progress(self, number, None, "still going")
                stop.wait(interval)

        thread = threading.Thread(target=report.apply, kwargs={"task_id": task_id}, daemon=True)
        thread.start()
        try:
            yield stop
        finally:
            stop.set()
            thread.join(30)


def attacker_socket(port: int) -> socket.socket | None:
    """A connection from the attacker's address; None when the server no longer accepts any
    (its listen queue full: the SYN goes unanswered)."""
    sock = socket.socket()
    sock.bind((ATTACKER, 0))
    sock.settimeout(3)
    try:
        sock.connect(("127.0.0.1", port))
    except TimeoutError:
        sock.close()
        return None
    sock.setblocking(False)
    return sock


class Attack:
    """Idle and slowloris connections from ``ATTACKER``; notes when the server ends each one."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sockets: list[socket.socket] = []
        self.slow: list[socket.socket] = []
        self.ended: dict[int, float] = {}  # fileno -> when the server's close or answer was seen
        self.answers: list[bytes] = []
        self.stopping = threading.Event()

    def open(self) -> None:
        """Open the connections, slowloris first: they take the address's places, and must be
        cut by the header deadline. Stops early if the server stops accepting connections."""
        for number in range(SLOWLORIS + IDLE):
            sock = attacker_socket(self.port)
            if sock is None:
                return
            if number < SLOWLORIS:
                sock.send(b"GET /healthz HTTP/1.1\r\nHost: pulse\r\n")
                self.slow.append(sock)
            self.sockets.append(sock)

    def run(self) -> None:
        """Trickle a header byte into each slowloris connection every 0.5 s, and read every
        connection until the server closes it."""
        while not self.stopping.is_set() and len(self.ended) < len(self.sockets):
            for sock in self.sockets:
                if sock.fileno() in self.ended:
                    continue
                if sock in self.slow:
                    try:
                        sock.send(b"X")
                    except OSError:
                        pass  # closed: the read below sees it
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""  # reset
                if data:
                    self.answers.append(data)
                self.ended[sock.fileno()] = time.monotonic()
            self.stopping.wait(0.5)

    def close(self) -> None:
        self.stopping.set()
        for sock in self.sockets:
            sock.close()


def test_idle_and_slowloris_connections_from_one_address_neither_starve_others_nor_stay(stack):
    port = int(stack.base_url.rsplit(":", 1)[1])
    task_id = f"limits-{uuid.uuid4().hex[:8]}"
    pushes: list[float] = []
    dashboard = stack.socket()  # from 127.0.0.1
    dashboard.on("task", lambda task: pushes.append(time.monotonic()))
    assert dashboard.call("subscribe", {"task": task_id}, timeout=10)["task"]["id"] == task_id
    attack = Attack(port)
    with requests.Session() as health, reporting(stack, task_id):
        wait_until(lambda: pushes, 20, 0.1, "the first push")
        started = time.monotonic()
        reader = threading.Thread(target=attack.run, daemon=True)
        try:
            attack.open()
            opened = time.monotonic() - started
            reader.start()
            # While the attacker's connections are open (at least until the header deadline):
            # /healthz answers, in under a second, and pushes keep coming.
            latencies = []
            while time.monotonic() < started + opened + 2 * HEADER_TIMEOUT:
                began = time.monotonic()
                assert health.get(stack.base_url + "/healthz", timeout=5).ok
                latencies.append(time.monotonic() - began)
                time.sleep(0.2)
            window = [at for at in pushes if at > started]
            gaps = [b - a for a, b in zip([started, *window], [*window, time.monotonic()], strict=True)]
            wait_until(lambda: len(attack.ended) == len(attack.sockets), CLOSED_WITHIN, 0.5,
                       "the server to close the attacker's connections")
            slow_ended = [attack.ended[sock.fileno()] - started for sock in attack.slow]
        finally:
            attack.close()
            if reader.is_alive():
                reader.join(10)
        assert dashboard.connected  # a websocket is no request waiting for headers: never cut
        assert health.get(stack.base_url + "/healthz", timeout=5).ok
    dashboard.disconnect()
    closed_after = max(attack.ended.values()) - started
    refused = [data for data in attack.answers if data.startswith(b"HTTP/1.1 503")]
    print(f"{len(attack.sockets)} attacker connections opened in {opened:.1f} s, all closed "
          f"{closed_after:.1f} s after the first; {len(refused)} refused with 503 at once; healthz "
          f"max {max(latencies) * 1000:.0f} ms over {len(latencies)} calls; {len(window)} pushes, "
          f"longest gap {max(gaps) * 1000:.0f} ms")
    assert len(attack.sockets) == IDLE + SLOWLORIS  # the server kept accepting
    assert max(latencies) < 1.0, latencies
    assert len(window) > 10 and max(gaps) < 2.0, (len(window), max(gaps))
    assert closed_after < CLOSED_WITHIN
    # Over the address's share (200) they were told why at once; the slowloris connections,
    # first in, were cut by the header deadline, never answered.
    assert len(refused) == IDLE
    assert b"too many connections from your address 127.0.0.2" in refused[0]
    assert b"Connection: close" in refused[0]
    assert min(slow_ended) > HEADER_TIMEOUT - 0.5, min(slow_ended)
    assert f'pulse_connections_refused_total{{limit="address"}} {IDLE}.0' in stack.api("GET", "/metrics").text


def test_an_idle_dashboard_socket_outlives_the_header_and_keepalive_timeouts(stack):
    client = stack.socket()
    time.sleep(2 * 3 + 1)  # past PULSE_KEEPALIVE_TIMEOUT (3 s) twice, with nothing sent
    assert client.connected
    assert "tasks" in client.call("subscribe", {"dashboard": True}, timeout=10)
    client.disconnect()


def raw_engineio(stack: Stack) -> websocket.WebSocket:
    url = stack.base_url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
    ws = websocket.create_connection(url, timeout=10)
    assert ws.recv().startswith("0{")  # Engine.IO's open packet: the session exists
    return ws


def closed_by_server(ws: websocket.WebSocket, timeout: float) -> bool:
    """Whether the server closes ``ws`` within ``timeout`` s (pings answered meanwhile)."""
    deadline = time.monotonic() + timeout
    ws.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            frame = ws.recv()
        except websocket.WebSocketTimeoutException:
            continue
        except (websocket.WebSocketConnectionClosedException, OSError):
            return True
        if frame == "2":
            ws.send("3")
        elif frame in ("1", ""):  # Engine.IO CLOSE, or the websocket's close frame
            return True
    return False


def test_an_engineio_session_that_never_connects_is_closed(stack):
    silent = raw_engineio(stack)  # opens a session, never sends Socket.IO's CONNECT
    started = time.monotonic()
    assert closed_by_server(silent, 10)  # PULSE_CONNECT_TIMEOUT is 1 s here
    print(f"closed after {time.monotonic() - started:.1f} s")
    silent.close()
    connecting = raw_engineio(stack)
    connecting.send("40" + json.dumps({"token": TOKEN}))
    assert connecting.recv().startswith("40{")
    assert not closed_by_server(connecting, 3)  # connected: not closed
    connecting.close()


def test_long_polls_are_capped_per_credential(stack):
    # Sent to a queue no worker consumes: recorded at the source, and it never ends.
    with producer_app(stack.env) as app:
        task_id = app.send_task("limits.waited", queue=f"nobody-{uuid.uuid4().hex[:8]}").id
    answers: dict[int, tuple[int, float]] = {}

    def wait(number: int, token: str) -> None:
        began = time.monotonic()
        status = stack.api("GET", f"/api/tasks/{task_id}?wait=4", token=token).status_code
        answers[number] = status, time.monotonic() - began

    wait_until(lambda: stack.api("GET", f"/api/tasks/{task_id}").ok, 20, 0.1, "the task's record")
    waiting = [threading.Thread(target=wait, args=(n, TOKEN)) for n in range(2)]
    waiting.append(threading.Thread(target=wait, args=(2, VIEWER)))  # a credential of its own
    for thread in waiting:
        thread.start()
    time.sleep(1)  # all three wait now; PULSE_MAX_WAITS_PER_CREDENTIAL is 2
    began = time.monotonic()
    third = stack.api("GET", f"/api/tasks/{task_id}?wait=4")
    refused_in = time.monotonic() - began
    assert stack.api("GET", f"/api/tasks/{task_id}").ok  # without ?wait= nothing is capped
    for thread in waiting:
        thread.join(30)
    again = stack.api("GET", f"/api/tasks/{task_id}?wait=0.5")  # the places were given back
    assert third.status_code == 429 and refused_in < 2, (third.status_code, refused_in, third.text)
    assert "too many requests are waiting with this credential (2 at most)" in third.json()["error"]
    assert third.headers["Retry-After"] == "5"
    assert [answers[n][0] for n in range(3)] == [200, 200, 200]
    assert all(seconds > 3 for _, seconds in answers.values())  # they did wait
    assert again.status_code == 200


def test_behind_a_proxy_requests_in_flight_are_capped_per_forwarded_address(redis_url):
    """Every connection comes from the proxy (here 127.0.0.1): it is never refused for its
    address; the clients named in X-Forwarded-For are bounded, each to its own share."""
    url = db_url(redis_url, DB)
    with own_server(url, "web-connections-proxied", PULSE_PROXY_HOPS="1",
                    PULSE_MAX_CONNECTIONS_PER_ADDRESS="2") as (_, proxied):
        with producer_app(proxied.env) as app:
            task_id = app.send_task("limits.waited", queue=f"nobody-{uuid.uuid4().hex[:8]}").id
        wait_until(lambda: proxied.api("GET", f"/api/tasks/{task_id}").ok, 20, 0.1, "the task's record")
        client = {"X-Forwarded-For": "203.0.113.5"}
        statuses: list[int] = []

        def wait() -> None:
            answer = proxied.api("GET", f"/api/tasks/{task_id}?wait=3", headers=dict(client))
            statuses.append(answer.status_code)

        waiting = [threading.Thread(target=wait) for _ in range(2)]
        for thread in waiting:
            thread.start()
        time.sleep(1)  # both in flight: the client's share
        refused = proxied.api("GET", "/healthz", headers=dict(client))
        other = proxied.api("GET", "/healthz", headers={"X-Forwarded-For": "203.0.113.6"})
        # More connections from the proxy's own address than the share: none refused.
        held = [socket.create_connection(("127.0.0.1", int(proxied.base_url.rsplit(":", 1)[1])))
                for _ in range(5)]
        try:
            assert all(proxied.api("GET", "/healthz").ok for _ in range(3))
        finally:
            for sock in held:
                sock.close()
        for thread in waiting:
            thread.join(30)
        after = proxied.api("GET", "/healthz", headers=dict(client))
        metrics = proxied.api("GET", "/metrics").text
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "10"
    assert "too many requests in flight from your address 203.0.113.5 (2 at most)" in refused.text
    assert 'pulse_connections_refused_total{limit="address"} 1.0' in metrics
    assert other.ok and after.ok and statuses == [200, 200]
