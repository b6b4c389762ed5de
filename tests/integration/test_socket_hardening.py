"""Socket.IO clients that misbehave, against the real server: one that stops reading (over a
websocket and over long polling), and one that sends garbage, oversized or unexpected messages.

The server runs on a Redis database of its own with a small client queue (32 packets); progress
comes from an eager task in this process that reports without a throttle, as fast as Redis takes it.
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

SOCKETS_DB = 8
QUEUE = 32
LOG = ARTIFACTS / "web-sockets.log"


@pytest.fixture(scope="module")
def stack(redis_url) -> Iterator[Stack]:
    url = db_url(redis_url, SOCKETS_DB)
    flush_db(url)
    with own_server(url, "web-sockets", PULSE_CLIENT_QUEUE=str(QUEUE)) as (_, running):
        yield running


@pytest.fixture(autouse=True)
def no_traceback_logged(stack):
    yield
    assert "Traceback" not in LOG.read_text(), f"the server logged a traceback; see {LOG}"


def metric(stack: Stack, name: str) -> float:
    text = stack.api("GET", "/metrics").text
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


@contextmanager
def streaming(stack: Stack, task_id: str, stop_when=lambda sent: False, most: int = 8000):
    """Report progress of ``task_id`` in a thread, unthrottled with 1000-character messages,
    until ``stop_when(sent)`` (asked every 100 reports) or ``most`` reports; yields the progress."""
    progress = {"sent": 0, "done": False}

    with producer_app({**stack.env, "PULSE_PROGRESS_INTERVAL": "0"}) as app:
        @app.task(bind=True, shared=False, name="hardening.stream")
        def stream(self):
            for number in range(1, most + 1):
                report_progress(self, number, most, "x" * 1000)
                progress["sent"] = number
                if number % 100 == 0 and stop_when(number):
                    break
            report_progress(self, most, most, "done")  # the last push: current == most

        def run() -> None:
            stream.apply(task_id=task_id)
            progress["done"] = True

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield progress
        finally:
            thread.join(120)


def raw_websocket(stack: Stack, rcvbuf: int | None = None) -> websocket.WebSocket:
    """A hand-made Socket.IO client over a websocket: handshake done, connected to "/"."""
    options = [(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)] if rcvbuf else []
    url = stack.base_url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
    ws = websocket.create_connection(url, timeout=10, sockopt=options)
    assert ws.recv().startswith("0{")
    ws.send("40" + json.dumps({"token": TOKEN}))
    assert ws.recv().startswith("40{")
    return ws


def ack(ws: websocket.WebSocket, ack_id: int, timeout: float = 20.0) -> object:
    """The acknowledgement ``ack_id``, skipping pushes and pings (answered, as a client would)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = ws.recv()
        if frame == "2":
            ws.send("3")
        elif frame.startswith(f"43{ack_id}["):
            return json.loads(frame[len(f"43{ack_id}"):])[0]
    raise AssertionError(f"no acknowledgement {ack_id} within {timeout}s")


def close_status(ws: websocket.WebSocket) -> int | None:
    """The status of the server's close frame, reading past anything before it (with
    ``recv_frame``, which does not answer the close: the server may be gone already)."""
    try:
        while True:
            frame = ws.recv_frame()
            if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
                return int.from_bytes(frame.data[:2], "big")
    except (websocket.WebSocketConnectionClosedException, OSError):
        return None
    finally:
        ws.shutdown()  # close() does nothing once the server closed it, not even close the socket


def read_to_the_end(ws: websocket.WebSocket, timeout: float) -> bool:
    """Read the raw TCP stream until the server closes it; False if it is still open at ``timeout``."""
    deadline = time.monotonic() + timeout
    ws.sock.settimeout(1)
    while time.monotonic() < deadline:
        try:
            if not ws.sock.recv(1 << 20):
                return True
        except TimeoutError:
            continue
        except OSError:  # reset: closed too
            return True
    return False


def test_a_stalled_websocket_client_is_disconnected_and_never_delays_the_others(stack):
    task_id = f"stall-{uuid.uuid4().hex[:8]}"
    stalled_before = metric(stack, "pulse_stalled_clients_total")
    # Subscribes like a dashboard and a task page, then never reads again.
    stalled = raw_websocket(stack, rcvbuf=4096)
    stalled.send(f'421["subscribe",{{"task":"{task_id}"}}]')
    assert ack(stalled, 1)["task"]["id"] == task_id
    stalled.send('422["subscribe",{"dashboard":true}]')
    assert "tasks" in ack(stalled, 2)

    pushes: list[tuple[float, float]] = []
    watcher = stack.socket()
    watcher.on("task", lambda task: pushes.append((time.monotonic(), task["progress"]["current"])))
    assert watcher.call("subscribe", {"task": task_id}, timeout=10)["task"]["id"] == task_id
    clients = metric(stack, "pulse_connected_clients")

    # Megabytes must go out before the kernel's buffers are full and packets start to queue.
    shed = lambda sent: metric(stack, "pulse_stalled_clients_total") > stalled_before  # noqa: E731
    started = time.monotonic()
    with streaming(stack, task_id, stop_when=shed) as progress:
        wait_until(lambda: shed(0), 60, 0.2, "the stalled client to be disconnected")
        shed_after = time.monotonic() - started
        wait_until(lambda: progress["done"], 120, 0.2, "the producer to stop")
    wait_until(lambda: any(current == 8000 for _, current in pushes[-5:]), 20, 0.1, "the watcher's last push")

    assert metric(stack, "pulse_stalled_clients_total") == stalled_before + 1
    assert metric(stack, "pulse_connected_clients") == clients - 1  # the gauge went down with it
    assert watcher.connected
    times = [at for at, current in pushes if current != 8000]  # while the producer ran
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    assert len(pushes) > 100 and max(gaps) < 3.0, (len(pushes), max(gaps))
    print(f"stalled client disconnected after {shed_after:.1f} s of streaming ({progress['sent']} reports); "
          f"the watcher got {len(pushes)} pushes, longest gap {max(gaps) * 1000:.0f} ms")
    # The server closed its TCP connection: what was in flight ends, then the stream does.
    assert read_to_the_end(stalled, 30)
    assert "stopped reading" in LOG.read_text()
    watcher.disconnect()
    stalled.close()


class Polling:
    """A hand-made Socket.IO client over long polling."""

    def __init__(self, stack: Stack) -> None:
        self.url = stack.base_url + "/socket.io/?EIO=4&transport=polling"
        self.http = requests.Session()
        opened = self.http.get(self.url, timeout=10).text
        self.url += "&sid=" + json.loads(opened[1:])["sid"]
        self.received: list[str] = []
        self.post("40" + json.dumps({"token": TOKEN}))
        assert self.get().startswith("40{")

    def close(self) -> None:
        """Leave "/" (a no-op once the server dropped the session) and close the HTTP connection."""
        self.post("41")
        self.http.close()

    def post(self, body: str | bytes) -> requests.Response:
        return self.http.post(self.url, data=body, timeout=10)

    def get(self) -> str:
        response = self.http.get(self.url, timeout=60)
        return response.text if response.ok else f"HTTP {response.status_code}"

    def ack(self, ack_id: int, timeout: float = 20.0) -> object:
        """The acknowledgement ``ack_id``, polling for it (handlers answer in any order)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for pkt in self.received:
                if pkt.startswith(f"43{ack_id}["):
                    return json.loads(pkt[len(f"43{ack_id}"):])[0]
            answer = self.get()
            assert not answer.startswith("HTTP"), answer
            self.received += answer.split("\x1e")
        raise AssertionError(f"no acknowledgement {ack_id} within {timeout}s")


def test_a_stalled_polling_client_is_disconnected(stack):
    task_id = f"stallp-{uuid.uuid4().hex[:8]}"
    stalled_before = metric(stack, "pulse_stalled_clients_total")
    clients = metric(stack, "pulse_connected_clients")
    client = Polling(stack)
    client.post(f'421["subscribe",{{"task":"{task_id}"}}]')
    assert client.ack(1)["task"]["id"] == task_id
    # It stops polling: every push waits in its queue.
    with streaming(stack, task_id, most=QUEUE * 20):
        wait_until(lambda: metric(stack, "pulse_stalled_clients_total") > stalled_before, 30, 0.2,
                   "the stalled polling client to be disconnected")
    assert metric(stack, "pulse_connected_clients") == clients
    # Its next poll gets none of the waiting pushes (they were dropped), but an error, which
    # makes a socket.io client reconnect.
    assert client.get() == "HTTP 400"
    client.close()


# Not Engine.IO, not Socket.IO, or not what a client sends; none carries an ack id.
GARBAGE = ["42[", "4{", "9", "x", "", "42[]", "42{}", "42[7]", "44{}", "4", "b!!", "bA", "2", "0", "6",
           '42["subscribe",{"_placeholder":true}]', "45" + "[" * 5000, b"\x00\xff binary"]
REFUSED = [  # with an ack id: each gets an error acknowledgement naming what was wrong
    ('4211["no-such-event",{"a":1}]', 11, "unknown event 'no-such-event'"),
    ('4212["subscribe",{"dashboard":true},"extra"]', 12, "subscribe takes one argument"),
    ('4213["disconnect"]', 13, "reserved"),
    ('4214["connect",{}]', 14, "reserved"),
    ("4215[", 15, "not a Socket.IO packet"),
    ("4216" + "[" * 20000, 16, "not a Socket.IO packet"),
    ('4217["subscribe",{"task":"bad id!"}]', 17, "invalid task id"),
    ('4218["subscribe",[1,2]]', 18, "subscribe takes"),
    ('4219["unsubscribe",null]', 19, "unsubscribe takes"),
    ('451-20["subscribe",{"_placeholder":true,"num":0}]', 20, "binary payloads are not accepted"),
]


def test_garbage_and_unexpected_messages_leave_the_websocket_working(stack):
    clients = metric(stack, "pulse_connected_clients")
    ws = raw_websocket(stack)
    for number, frame in enumerate(GARBAGE, start=100):
        if isinstance(frame, bytes):
            ws.send_binary(frame)
        else:
            ws.send(frame)
        ws.send(f'42{number}["subscribe",{{"task":"ok-{number}"}}]')
        assert ack(ws, number)["task"]["id"] == f"ok-{number}", frame  # still works
    for frame, ack_id, error in REFUSED:
        ws.send(frame)
        assert error in ack(ws, ack_id)["error"], frame
    ws.send_binary(b"\x00attachment")  # the refused binary event's attachment: dropped too
    ws.send('4299["subscribe",{"dashboard":true}]')
    assert "tasks" in ack(ws, 99)
    assert metric(stack, "pulse_connected_clients") == clients + 1
    assert stack.api("GET", "/healthz").json()["status"] == "ok"
    ws.close()
    wait_until(lambda: metric(stack, "pulse_connected_clients") == clients, 10, 0.1, "the disconnect")


def test_garbage_over_long_polling_is_dropped_too(stack):
    clients = metric(stack, "pulse_connected_clients")
    client = Polling(stack)
    assert client.post("x\x1e9\x1e0\x1e42[\x1e" + "\x1e".join(["3"] * 30)).ok
    assert client.post(b"\xff\xfe").ok
    client.post('427["subscribe",{"task":"poll-ok"}]\x1e428["nope"]')
    assert client.ack(7)["task"]["id"] == "poll-ok"
    assert "unknown event" in client.ack(8)["error"]
    client.close()
    wait_until(lambda: metric(stack, "pulse_connected_clients") == clients, 10, 0.1, "the disconnect")


def test_an_oversized_message_closes_only_that_websocket_and_is_refused_over_polling(stack):
    """No message above the limit (64 KiB) is read: a websocket cannot skip one to go on, so it
    is closed (status 1009, message too big); a polling POST is answered 413, its session goes on."""
    clients = metric(stack, "pulse_connected_clients")
    bystander = raw_websocket(stack)
    big = '4233["subscribe",{"task":"' + "a" * 70_000 + '"}]'
    ws = raw_websocket(stack)
    ws.send(big)
    assert close_status(ws) == 1009  # "message too big"
    wait_until(lambda: metric(stack, "pulse_connected_clients") == clients + 1, 10, 0.1, "the disconnect")
    client = Polling(stack)
    assert client.post(big).status_code == 413
    client.post('424["subscribe",{"task":"after-big"}]')
    assert client.ack(4)["task"]["id"] == "after-big"
    client.close()
    bystander.send('421["subscribe",{"dashboard":true}]')
    assert "tasks" in ack(bystander, 1)
    bystander.close()
