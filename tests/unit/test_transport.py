"""TransportGuard on a real engineio.Server (threading mode), and the frame and body filters."""

import io
import socket
import time

import engineio
import pytest
from engineio import packet as eio
from engineio import socket as eio_socket
from engineio.async_drivers import threading as threading_driver

from pulse.server.push.transport import TransportGuard, _EngineIOFrames, decode, polling_filter
from pulse.settings import ConfigError, load_config

from ..conftest import TOKEN, wait_until


@pytest.fixture
def server():
    return engineio.Server(async_mode="threading")


def connected_client(server, sid="sid-1"):
    client = eio_socket.Socket(server, sid)
    client.connected = True
    server.sockets[sid] = client
    return client


def message(number):
    return eio.Packet(eio.MESSAGE, data=f'2["tasks",{number}]')


def test_a_client_that_stops_reading_is_disconnected_and_nothing_more_is_queued(server):
    disconnected, stalled = [], []
    server.on("disconnect", lambda sid, reason: disconnected.append((sid, reason)))
    client = connected_client(server)
    guard = TransportGuard(server, queue_limit=16, on_stalled=lambda: stalled.append(1))
    guard.install()
    tcp, peer = socket.socketpair()
    guard._connections["sid-1"] = tcp  # what the websocket wrapper records for a websocket client
    for number in range(16):
        server.send_packet("sid-1", message(number))
    assert client.queue.qsize() == 16 and not disconnected
    started = time.monotonic()
    for number in range(16, 1000):
        server.send_packet("sid-1", message(number))  # never blocks: the disconnect runs apart
    assert time.monotonic() - started < 1.0
    wait_until(lambda: disconnected, 5, what="the disconnect handler")
    assert disconnected == [("sid-1", server.reason.SERVER_DISCONNECT)] and stalled == [1]
    assert client.closed
    assert client.queue.qsize() == 1 and client.queue.get(block=False) is None  # pushes dropped
    peer.settimeout(5)
    assert peer.recv(10) == b""  # its TCP connection was shut down
    tcp.close(), peer.close()


def test_a_client_that_keeps_reading_is_never_disconnected(server):
    disconnected = []
    server.on("disconnect", lambda sid, reason: disconnected.append(sid))
    client = connected_client(server)
    TransportGuard(server, queue_limit=16).install()
    for number in range(500):
        server.send_packet("sid-1", message(number))
        if client.queue.qsize() >= 10:
            client.poll()  # what the writer does for a client that reads
    assert not disconnected and not client.closed


def test_the_drivers_table_is_not_shared(server):
    TransportGuard(server, queue_limit=16).install()
    assert server._async["websocket"] is not threading_driver._async["websocket"]
    assert engineio.Server(async_mode="threading")._async["websocket"] is threading_driver._async["websocket"]


class FakeWebSocket:
    def __init__(self, frames):
        self.frames = list(frames)
        self.socket = "the tcp socket"

    def wait(self):
        return self.frames.pop(0)


def test_websocket_frames_that_are_not_engineio_are_skipped():
    frames = ["", "x", "{}", "bA", "3", "42[", "", '42["a"]', b"\x00", None]
    ws = _EngineIOFrames(FakeWebSocket(frames), "sid")
    assert [ws.wait() for _ in range(5)] == ["3", "42[", '42["a"]', b"\x00", None]
    assert ws.socket == "the tcp socket"  # everything else is the websocket's own


@pytest.mark.parametrize("frame, packet_type", [("3", eio.PONG), ('42["x"]', eio.MESSAGE), ("9", 9),
                                                ("x", None), ("", None), ("bA", None)])
def test_decode(frame, packet_type):
    pkt = decode(frame)
    assert (pkt.packet_type if pkt else None) == packet_type


def post(body: bytes, method="POST", path="/socket.io/", max_size=1024):
    """What reaches engineio of ``body``, or the filter's own answer."""
    seen = {}

    def app(environ, start_response):
        seen["body"] = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        return [b""]

    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "CONTENT_LENGTH": str(len(body)),
               "wsgi.input": io.BytesIO(body)}
    answer = polling_filter(app, max_size)(environ, lambda status, headers: seen.update(status=status))
    return seen.get("body", (seen.get("status"), answer))


def test_polling_bodies_keep_only_client_packets():
    body = b'4{bad\x1e42["x"]\x1ex\x1e3\x1e9\x1e0\x1e\x1e1'
    # Socket.IO-level garbage stays (SafePacket answers it); what is not Engine.IO goes.
    assert post(body) == b'4{bad\x1e42["x"]\x1e3\x1e1'
    assert post(b"d=42%5B%22x%22%5D%1Ex") == b'42["x"]'  # JSONP form encoding
    assert post(b"\xff\xfe") == b""
    assert post("\x1e".join(["3"] * 40).encode()) == "\x1e".join(["3"] * 16).encode()


def test_polling_bodies_above_the_limit_get_413_and_others_pass_untouched():
    assert post(b"x" * 2000) == ("413 Payload Too Large", [b"a message is at most 1024 bytes"])
    assert post(b"x", method="GET") == b"x"
    assert post(b"x", path="/api/tasks") == b"x"


def test_socket_limits_come_from_the_config(app):
    assert app.extensions["socketio"].server.eio.max_http_buffer_size == 64 * 1024
    config = load_config({"PULSE_TOKEN": TOKEN, "PULSE_MAX_SOCKET_MESSAGE": "4096",
                          "PULSE_CLIENT_QUEUE": "64"})
    assert (config["MAX_SOCKET_MESSAGE"], config["CLIENT_QUEUE"]) == (4096, 64)
    with pytest.raises(ConfigError, match="PULSE_CLIENT_QUEUE"):
        load_config({"PULSE_TOKEN": TOKEN, "PULSE_CLIENT_QUEUE": "2"})
