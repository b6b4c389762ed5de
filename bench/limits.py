"""Benchmark 8: the machine's raw limits, to read every Pulse figure as a fraction of them.

Redis: an embedded Redis (``harness.stack``) and one real ``task-progress`` event message
(667 bytes, sent by Celery's own event dispatcher and captured off pub/sub). A raw-socket
client sends it as pre-encoded PUBLISH commands, pipelined in chunks of 1,000, so the client
costs next to nothing: messages/s with no subscriber, and delivered to one pattern subscriber
(``/*celeryev/task.*``, as an event monitor subscribes) that drains its socket without parsing.
Also the rate of ``stream.publish`` (redis-py pipeline), the replay tool of the ingest benchmarks.

Socket.IO: ``bench/bare_socketio.py``, a bare Flask-SocketIO app on eventlet with no Pulse code,
in a subprocess; it emits ``task`` events of ~600 bytes, one emit at a time, to a room of 1
and of 100 connected clients. The clients are lean websocket clients in this process (asyncio
protocol speaking Engine.IO 4 that counts event frames without decoding them): deliveries/s,
from the request to the last frame received. Rounds alternate; medians are reported.
Full: 200,000 PUBLISHes per round (3 rounds), 20,000 emits (1 client) and 1,000 emits
(100 clients, 100,000 deliveries) per round (3 rounds); quick: 20,000 PUBLISHes, 1,000 and 50
emits, 2 rounds.
"""

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
import uuid

import redis
import requests

from pulse import devstack

from . import stream
from .harness import ROOT, Row, Stack, cpu_seconds, median, stack

NAME = "8 limits"
PATTERN = b"/*celeryev/task.*"
CHUNK = 1000


def resp(*parts: bytes) -> bytes:
    """One Redis command in the wire protocol."""
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def celery_event(running: Stack) -> tuple[bytes, bytes]:
    """(channel, data) of a real ``task-progress`` event, as a subscriber receives it."""
    from tasks.celery import make_celery

    app = make_celery(running.env)
    sub = redis.Redis.from_url(running.redis_url).pubsub(ignore_subscribe_messages=True)
    sub.psubscribe(PATTERN)
    sub.get_message(timeout=1)  # the subscription is registered before the event goes out
    with app.events.default_dispatcher(hostname="worker@bench") as dispatcher:
        dispatcher.send("task-progress", uuid=str(uuid.uuid4()), current=5, total=10, percent=50.0,
                        message=repr(time.time()))
    message = sub.get_message(timeout=5)
    sub.close()
    app.close()
    if message is None:
        raise RuntimeError("no event captured off pub/sub")
    return message["channel"], message["data"]


def publish_raw(port: int, command: bytes, count: int) -> float:
    """Send ``count`` copies of ``command`` pipelined in chunks; seconds until every reply is in."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.perf_counter()
        for done in range(0, count, CHUNK):
            size = min(CHUNK, count - done)
            sock.sendall(command * size)
            replies = 0
            while replies < size:  # each reply is one integer line, ":<subscribers>\r\n"
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("redis closed the connection")
                replies += data.count(b"\n")
        return time.perf_counter() - started


class Drainer:
    """A pattern subscriber that reads its socket as fast as it can and counts whole messages."""

    def __init__(self, port: int, channel: bytes, data: bytes) -> None:
        self.frame = len(resp(b"pmessage", PATTERN, channel, data))
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(resp(b"PSUBSCRIBE", PATTERN))
        confirm = len(b"*3\r\n$10\r\npsubscribe\r\n") + len(b"$%d\r\n%s\r\n" % (len(PATTERN), PATTERN)) + 4
        got = b""
        while len(got) < confirm:
            got += self.sock.recv(confirm - len(got))
        self.received = 0
        self.last = 0.0
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        buffer = bytearray(1 << 20)
        while True:
            try:
                got = self.sock.recv_into(buffer)
            except OSError:  # closed by close()
                return
            if not got:
                return
            self.received += got
            self.last = time.perf_counter()

    def wait(self, messages: int, timeout: float) -> int:
        """Wait until ``messages`` more have arrived (or ``timeout``); returns how many did."""
        deadline = time.monotonic() + timeout
        while self.received < messages * self.frame and time.monotonic() < deadline:
            time.sleep(0.002)
        return self.received // self.frame

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.thread.join()
        self.sock.close()


def redis_rows(running: Stack, count: int, rounds: int) -> list[Row]:
    channel, data = celery_event(running)
    command = resp(b"PUBLISH", channel, data)
    alone, drained, client = [], [], []
    delivered, lost = 0, 0
    for _ in range(rounds):  # alternate, so machine noise hits all three alike
        alone.append(count / publish_raw(running.redis_port, command, count))
        drainer = Drainer(running.redis_port, channel, data)
        started = time.perf_counter()
        publish_raw(running.redis_port, command, count)
        got = drainer.wait(count, timeout=60)
        drained.append(got / (drainer.last - started))
        delivered, lost = delivered + got, lost + count - got
        drainer.close()
        client.append(count / stream.publish(running.redis_url, [(channel, data)] * count))
    size = f"{len(data)}-byte task-progress event"
    return [
        Row(NAME, "Redis PUBLISH, no subscriber", median(alone), "msg/s",
            note=f"raw socket, pipelined x{CHUNK}, {size}, {count:,} per round, median of {rounds}"),
        Row(NAME, "Redis PUBLISH to 1 pattern subscriber", median(drained), "msg/s",
            note=f"delivered to a raw-socket subscriber of {PATTERN.decode()}; {delivered:,} delivered, "
                 f"{lost:,} lost"),
        Row(NAME, "Redis PUBLISH via redis-py pipeline", median(client), "msg/s",
            note="stream.publish (the ingest benchmarks' replay), no subscriber"),
    ]


class Client(asyncio.Protocol):
    """A minimal Socket.IO client (Engine.IO 4 over websocket) that counts ``42`` event frames."""

    def __init__(self, port: int, rooms: list[str]) -> None:
        self.port, self.rooms = port, rooms
        self.buffer = bytearray()
        self.upgraded = False
        self.count = 0
        self.last = 0.0
        self.ready = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
                        b"Host: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                        % self.port)

    def send(self, text: bytes) -> None:
        # Client frames must be masked; an all-zero mask key leaves the payload as it is.
        size = len(text)
        head = bytes([0x81, 0x80 | size]) if size < 126 else bytes([0x81, 0xFE]) + size.to_bytes(2, "big")
        self.transport.write(head + b"\0\0\0\0" + text)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(ConnectionError(bytes(buffer[:200]).decode(errors="replace")))
                return
            del buffer[:end + 4]
            self.upgraded = True
        while len(buffer) >= 2:
            size, start = buffer[1] & 0x7F, 2
            if size == 126:
                size, start = int.from_bytes(buffer[2:4], "big"), 4
            elif size == 127:
                size, start = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < start + size:
                return
            # A header cut short reads a wrong size and waits above; it is parsed again when whole.
            self._frame(buffer[0] & 0x0F, bytes(buffer[start:start + min(size, 2)]))
            del buffer[:start + size]

    def _frame(self, opcode: int, head: bytes) -> None:
        """Act on a frame by its first two bytes: enough to tell Engine.IO's packet types apart."""
        if opcode != 1:
            return
        if head == b"42":
            self.count += 1
            self.last = time.perf_counter()
        elif head == b"0{":  # Engine.IO open: connect the default namespace with our rooms
            self.send(b"40" + json.dumps({"rooms": self.rooms}).encode())
        elif head == b"40" and not self.ready.done():
            self.ready.set_result(True)
        elif head == b"2":  # Engine.IO ping
            self.send(b"3")


async def blast(url: str, clients: list[Client], room: str, count: int) -> float:
    """Ask the server for ``count`` emits to ``room``; deliveries per second to ``clients``."""
    for client in clients:
        client.count = 0
    started = time.perf_counter()
    await asyncio.to_thread(requests.get, f"{url}/blast", params={"room": room, "n": count, "size": 600},
                            timeout=10)
    deadline = time.monotonic() + 60
    while any(c.count < count for c in clients) and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    return sum(c.count for c in clients) / (max(c.last for c in clients) - started)


async def socketio_rates(port: int, emits: int, rounds: int) -> tuple[list[float], list[float], int]:
    loop = asyncio.get_running_loop()
    clients = []
    for number in range(100):
        rooms = ["all", "one"] if number == 0 else ["all"]
        _transport, client = await loop.create_connection(lambda r=rooms: Client(port, r), "127.0.0.1", port)
        clients.append(client)
    await asyncio.wait_for(asyncio.gather(*(c.ready for c in clients)), 30)
    url = f"http://127.0.0.1:{port}"
    one, hundred = [], []
    for _ in range(rounds):
        one.append(await blast(url, clients[:1], "one", emits))
        hundred.append(await blast(url, clients, "all", emits // 20))
    lost = sum(max(0, emits // 20 - c.count) for c in clients)
    for client in clients:
        client.transport.close()
    return one, hundred, lost


def start_bare(running: Stack) -> int:
    """The bare Socket.IO server on a free port, stopped by PID with the stack."""
    port = devstack.free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare_socketio.py"), str(port)], cwd=ROOT,
                            stdout=running.log("bare-socketio"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    running.procs["bare-socketio"] = proc
    devstack.wait_for_port(port, proc, what="bare Socket.IO server")
    return port


def socketio_rows(running: Stack, emits: int, rounds: int) -> list[Row]:
    port = start_bare(running)
    server = running.procs["bare-socketio"].pid
    cpu, server_cpu, began = time.process_time(), cpu_seconds(server), time.monotonic()
    one, hundred, lost = asyncio.run(socketio_rates(port, emits, rounds))
    wall = time.monotonic() - began
    client_cpu = 100 * (time.process_time() - cpu) / wall
    server_cpu = 100 * (cpu_seconds(server) - server_cpu) / wall
    running.stop("bare-socketio")
    setup = f"bare Flask-SocketIO on eventlet, ~600-byte event, median of {rounds}"
    return [
        Row(NAME, "Socket.IO emit, 1 client", median(one), "msg/s",
            note=f"{setup}; {emits:,} emits per round"),
        Row(NAME, "Socket.IO emit, 100 clients", median(hundred), "msg/s",
            note=f"deliveries/s ({median(hundred) / 100:,.0f} emits/s); {emits // 20:,} emits per round; "
                 f"{lost} lost in the last round; CPU over the run (incl. connecting): server "
                 f"{server_cpu:.0f}%, lean clients {client_cpu:.0f}% of a core"),
    ]


def run(quick: bool) -> list[Row]:
    publishes, emits, rounds = (20_000, 1_000, 2) if quick else (200_000, 20_000, 3)
    with stack("limits") as running:
        return redis_rows(running, publishes, 3) + socketio_rows(running, emits, rounds)
