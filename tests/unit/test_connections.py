"""The connection bounds' parts, in-process: the tally, the accept-time refusal, the in-flight
layer behind proxies, the Engine.IO connect deadline, and their settings. The eventlet server
itself, with its header deadlines, is tested on the real server (tests/integration/
test_connection_limits.py): unit tests run unpatched, in threading mode."""

import errno
import socket
import time

import pytest
import socketio

from pulse.server.http.connections import (
    GuardedListener,
    RequestsInFlight,
    Tally,
    client_address,
    descriptor_room,
    refusal,
    refuse,
)
from pulse.server.push.transport import ConnectDeadline
from pulse.settings import ConfigError, load_config

from ..conftest import TOKEN, wait_until


def test_the_tally_refuses_over_either_limit_and_gives_places_back():
    tally = Tally(per_address=2, total=3)
    assert tally.admit("10.0.0.1") is None and tally.admit("10.0.0.1") is None
    assert "too many connections from your address 10.0.0.1 (2 at most)" in tally.admit("10.0.0.1")
    assert tally.admit("10.0.0.2") is None
    assert "the server holds its most connections (3)" in tally.admit("10.0.0.3")
    tally.release("10.0.0.1")
    assert tally.admit("10.0.0.3") is None
    assert (tally.open, tally.refused, tally.held("10.0.0.1")) == (3, 2, 1)
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        tally.release(address)
    assert tally.open == 0 and tally._by_address == {}


def test_no_per_address_limit_when_it_is_zero():
    tally = Tally(per_address=0, total=1000)
    assert all(tally.admit("10.0.0.1") is None for _ in range(500))


def test_the_refusal_is_a_whole_answer_that_says_why():
    answer = refusal("too many connections from your address 10.0.0.1 (200 at most)")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"\r\nConnection: close" in head and b"\r\nRetry-After: 10" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert body == b"503 Service Unavailable: too many connections from your address 10.0.0.1 (200 at most)\n"


def test_a_refused_connection_reads_the_answer_then_the_end():
    ours, theirs = socket.socketpair()
    theirs.sendall(b"GET / HTTP/1.1\r\nHost: pulse\r\n\r\n")  # read and dropped, so no reset
    refuse(ours, "full")
    theirs.settimeout(5)
    received = b""
    while chunk := theirs.recv(4096):
        received += chunk
    assert received.startswith(b"HTTP/1.1 503") and received.endswith(b"503 Service Unavailable: full\n")
    theirs.close()


def connect_from(address: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind((address, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def test_the_listener_hands_over_connections_within_the_limits_and_answers_the_others():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    listener = GuardedListener(server, Tally(per_address=1, total=10), time.sleep)
    first, second, other = (connect_from(a, port) for a in ("127.0.0.1", "127.0.0.1", "127.0.0.2"))
    try:
        accepted, address = listener.accept()
        assert address[0] == "127.0.0.1"
        accepted_other, address = listener.accept()  # the second was refused on the way
        assert address[0] == "127.0.0.2"
        second.settimeout(5)
        assert b"too many connections from your address 127.0.0.1 (1 at most)" in second.recv(4096)
        assert listener.getsockname()[1] == port  # everything else is the socket's own
        assert listener.tally.open == 2 and listener.tally.refused == 1
    finally:
        for sock in (first, second, other, accepted, accepted_other, server):
            sock.close()


def test_accepting_goes_on_past_exhausted_descriptors_and_a_reset_connection():
    class Exhausted:
        calls = 0

        def accept(self):
            self.calls += 1
            if self.calls < 3:
                raise OSError(errno.EMFILE, "Too many open files")
            if self.calls == 3:
                raise OSError(errno.ECONNABORTED, "Software caused connection abort")
            if self.calls == 4:
                raise OSError(errno.EBADF, "Bad file descriptor")  # the listener closed
            return "conn", ("10.0.0.1", 5)

    pauses = []
    listener = GuardedListener(Exhausted(), Tally(per_address=1, total=10), pauses.append)
    with pytest.raises(OSError, match="Bad file descriptor"):
        listener.accept()
    assert pauses == [0.1, 0.1]  # out of descriptors: waited; one connection's error: skipped
    assert listener.accept() == ("conn", ("10.0.0.1", 5))


def test_descriptors_are_raised_towards_what_the_connections_need():
    assert descriptor_room(100) == 100  # far below any limit


def app_answering(seen: list):
    def app(environ, start_response):
        start_response("200 OK", [])
        seen.append(environ.get("REMOTE_ADDR"))
        return [b"ok"]

    return app


def call(app, **environ):
    status = []
    body = app({"REMOTE_ADDR": "10.0.0.9", **environ}, lambda s, headers: status.append((s, dict(headers))))
    return status[0], body


def test_requests_in_flight_are_counted_per_forwarded_address_until_each_answer_is_closed():
    layer = RequestsInFlight(app_answering([]), per_address=2, hops=1)
    answers = [call(layer, HTTP_X_FORWARDED_FOR="203.0.113.5") for _ in range(2)]
    assert all(status == "200 OK" for (status, _), _ in answers)
    (status, headers), body = call(layer, HTTP_X_FORWARDED_FOR="203.0.113.5")
    assert status == "503 Service Unavailable" and headers["Retry-After"] == "10"
    assert b"too many requests in flight from your address 203.0.113.5 (2 at most)" in b"".join(body)
    assert call(layer, HTTP_X_FORWARDED_FOR="203.0.113.6")[0][0] == "200 OK"  # another client
    answers[0][1].close()  # the server closes an answer once it is sent
    assert call(layer, HTTP_X_FORWARDED_FOR="203.0.113.5")[0][0] == "200 OK"


def test_a_request_that_raises_gives_its_place_back():
    def failing(environ, start_response):
        raise RuntimeError("boom")

    layer = RequestsInFlight(failing, per_address=1, hops=0)
    for _ in range(3):
        with pytest.raises(RuntimeError):
            call(layer)
    assert layer.tally.open == 0


@pytest.mark.parametrize("forwarded, hops, expected", [
    (None, 0, "10.0.0.9"),
    ("203.0.113.5", 0, "10.0.0.9"),  # not believed without proxies
    ("203.0.113.5", 1, "203.0.113.5"),
    ("198.51.100.1, 203.0.113.5", 1, "203.0.113.5"),  # the client may write anything on the left
    ("198.51.100.1, 203.0.113.5", 2, "198.51.100.1"),
    ("203.0.113.5", 2, "10.0.0.9"),  # fewer than the proxies: as ProxyFix, the connecting address
])
def test_the_client_address_is_read_as_proxyfix_reads_it(forwarded, hops, expected):
    environ = {"REMOTE_ADDR": "10.0.0.9"}
    if forwarded is not None:
        environ["HTTP_X_FORWARDED_FOR"] = forwarded
    assert client_address(environ, hops) == expected


class Session:
    """What python-engineio keeps for a session; enough for the deadline."""

    def __init__(self, sid: str) -> None:
        self.sid = sid
        self.closed = False
        self.closed_for = None

    def close(self, wait=True, abort=False, reason=None):
        self.closed, self.closed_for = True, reason


def test_engineio_sessions_that_never_connect_a_namespace_are_closed():
    server = socketio.Server(async_mode="threading")
    expired = []
    ConnectDeadline(server, 0.2, on_expired=lambda: expired.append(1)).install()
    eio = server.eio
    silent, connecting = Session("silent"), Session("connecting")
    for session in (silent, connecting):
        eio.sockets[session.sid] = session
        assert eio.handlers["connect"](session.sid, {"REMOTE_ADDR": "10.0.0.1"}) is not False
    assert server.environ["silent"]["REMOTE_ADDR"] == "10.0.0.1"  # python-socketio's handler ran
    server.manager.connect("connecting", "/")  # what a Socket.IO CONNECT does
    wait_until(lambda: silent.closed_for, 5, what="the silent session to be closed")
    time.sleep(0.3)
    assert silent.closed_for == eio.reason.SERVER_DISCONNECT and "silent" not in eio.sockets
    assert connecting.closed_for is None and "connecting" in eio.sockets
    assert expired == [1]


def test_connection_settings_have_defaults_and_name_the_bad_key():
    config = load_config({"PULSE_TOKEN": TOKEN})
    timeouts = (config["HEADER_TIMEOUT"], config["KEEPALIVE_TIMEOUT"], config["CONNECT_TIMEOUT"])
    assert timeouts == (10.0, 30.0, 5.0)
    assert (config["MAX_CONNECTIONS_PER_ADDRESS"], config["MAX_CONNECTIONS"]) == (200, 10_000)
    assert config["MAX_WAITS_PER_CREDENTIAL"] == 20
    assert load_config({"PULSE_TOKEN": TOKEN, "PULSE_MAX_CONNECTIONS_PER_ADDRESS": "0"})[
        "MAX_CONNECTIONS_PER_ADDRESS"] == 0
    for key, bad in (("PULSE_HEADER_TIMEOUT", "0"), ("PULSE_KEEPALIVE_TIMEOUT", "soon"),
                     ("PULSE_MAX_CONNECTIONS_PER_ADDRESS", "-1"), ("PULSE_MAX_CONNECTIONS", "0"),
                     ("PULSE_CONNECT_TIMEOUT", "0.1"), ("PULSE_MAX_WAITS_PER_CREDENTIAL", "0")):
        with pytest.raises(ConfigError, match=key):
            load_config({"PULSE_TOKEN": TOKEN, key: bad})
