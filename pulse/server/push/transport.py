"""Engine.IO's transports, kept safe from clients that misbehave.

A client that stops reading: python-engineio queues every packet for a client without bound,
and one green thread per websocket writes them out; once the client's TCP window and the
kernel's buffers are full (megabytes), that writer blocks and the queue grows for as long as
pushes go on. ``TransportGuard`` bounds the queue: when ``queue_limit`` packets are waiting, the
client is disconnected (its rooms left, the clients gauge lowered, its TCP connection shut
down) and nothing more is queued for it. The emit that noticed only schedules this, so a push
to a room never waits on its slowest member. The client's socket.io library reconnects, and
its subscribe acknowledgement brings it up to date.

Input that is not Engine.IO at all (an empty or non-numeric websocket frame, a polling body
that is not a payload) made python-engineio raise: on a websocket that killed the reader and
left the session half dead until its ping timed out, over polling it logged a traceback. Such
frames are dropped before python-engineio sees them. A polling POST above the message limit
gets 413 here (python-engineio's own refusal could hold the request forever).

An Engine.IO session that never connects to a Socket.IO namespace is closed after
``PULSE_CONNECT_TIMEOUT`` (``ConnectDeadline``).
"""

import io
import logging
import socket as sockets
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from engineio import packet as eio

log = logging.getLogger(__name__)

# What a client may send over polling; engineio refuses the others by closing the session.
POLLING_TYPES = frozenset({eio.CLOSE, eio.PONG, eio.MESSAGE})
MAX_PAYLOAD_PACKETS = 16  # engineio's Payload raises above this


class TransportGuard:
    """Bounds what waits for each client, and drops websocket frames that are not Engine.IO."""

    def __init__(self, server: Any, queue_limit: int, on_stalled: Callable[[], None] = lambda: None) -> None:
        self.server = server  # the engineio.Server
        self.queue_limit = queue_limit
        self.on_stalled = on_stalled
        self._connections: dict[str, Any] = {}  # sid -> the TCP socket under its websocket
        self._stalled: set[str] = set()
        self._lock = threading.Lock()  # threading mode: two emits may notice the same client

    def install(self) -> None:
        send = self.server.send_packet

        def send_packet(sid: str, pkt: eio.Packet) -> None:
            if self._admit(sid):
                send(sid, pkt)

        # Every packet python-socketio sends (pushes, acknowledgements) goes through here.
        self.server.send_packet = send_packet
        # A copy: the driver's table is shared by every server in the process.
        drivers = self.server._async
        self.server._async = {**drivers, "websocket": self._websocket(drivers["websocket"])}

    def _admit(self, sid: str) -> bool:
        """Whether to queue a packet for ``sid``; schedules its disconnect when it fell behind."""
        client = self.server.sockets.get(sid)
        if client is None or client.closing or client.closed or client.queue.qsize() < self.queue_limit:
            return True
        with self._lock:
            if sid in self._stalled:  # its disconnect is under way
                return False
            self._stalled.add(sid)
        self.server.start_background_task(self._disconnect, sid, client)
        return False

    def _disconnect(self, sid: str, client: Any) -> None:
        log.warning("pulse: Socket.IO client %s stopped reading (%d packets waiting); disconnecting it",
                    sid, client.queue.qsize())
        self.on_stalled()
        try:
            _drain(client.queue, self.server.get_queue_empty_exception())
            # Runs the disconnect handlers. No CLOSE packet: it would never be read (a polling
            # client's next poll finds the session gone and gets 400, then reconnects).
            client.close(wait=False, abort=True, reason=self.server.reason.SERVER_DISCONNECT)
        finally:
            connection = self._connections.get(sid)
            if connection is not None:  # unblocks the writer stuck in send, and the reader
                try:
                    connection.shutdown(sockets.SHUT_RDWR)
                except OSError:
                    pass  # already closed by the client
            with self._lock:
                self._stalled.discard(sid)

    def _websocket(self, websocket_class: Callable[..., Any]) -> Callable[..., Any]:
        """engineio's websocket app factory, with each connection remembered and its frames checked."""

        def make(handler: Callable[[Any], Any], server: Any) -> Any:
            # engineio passes its Socket's bound handler: that names the connection.
            sid = getattr(getattr(handler, "__self__", None), "sid", None)

            def serve(ws: Any) -> Any:
                if sid is not None:
                    self._connections[sid] = _tcp_socket(ws)
                try:
                    return handler(_EngineIOFrames(ws, sid))
                finally:
                    self._connections.pop(sid, None)

            return websocket_class(serve, server)

        return make


class ConnectDeadline:
    """Closes Engine.IO sessions that have not connected to a Socket.IO namespace in ``timeout`` s.

    python-engineio keeps a session open for as long as its client answers pings, whether it
    ever sends Socket.IO's CONNECT or not: such a session held its connection (and, over a
    websocket, two green threads) for nothing, for as long as the client liked. A real client
    sends CONNECT as soon as the session opens (one round trip).
    """

    def __init__(self, server: Any, timeout: float, on_expired: Callable[[], None] = lambda: None) -> None:
        self.server = server  # the socketio.Server
        self.timeout = timeout
        self.on_expired = on_expired

    def install(self) -> None:
        eio = self.server.eio
        connect = eio.handlers["connect"]  # python-socketio's: it keeps the session's environ

        def on_connect(eio_sid: str, environ: dict) -> Any:
            accepted = connect(eio_sid, environ)
            if accepted is not False:
                eio.start_background_task(self._expire, eio_sid)
            return accepted

        eio.handlers["connect"] = on_connect

    def connected(self, eio_sid: str) -> bool:
        """Whether the session joined any namespace (python-socketio knows each one's sids)."""
        manager = self.server.manager
        return any(manager.sid_from_eio_sid(eio_sid, namespace) is not None
                   for namespace in list(manager.get_namespaces()))

    def _expire(self, eio_sid: str) -> None:
        eio = self.server.eio
        eio.sleep(self.timeout)
        if eio_sid not in eio.sockets or self.connected(eio_sid):
            return
        log.info("pulse: Engine.IO session %s sent no Socket.IO CONNECT within %g s; closing it",
                 eio_sid, self.timeout)
        self.on_expired()
        eio.disconnect(eio_sid)


class _EngineIOFrames:
    """A websocket whose ``wait`` skips frames that are not Engine.IO packets."""

    def __init__(self, ws: Any, sid: str | None) -> None:
        self._ws = ws
        self._sid = sid

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ws, name)

    def wait(self) -> Any:
        while True:
            frame = self._ws.wait()
            if frame is None or decode(frame) is not None:
                return frame
            log.info("pulse: dropped a websocket frame from %s that is not Engine.IO", self._sid)


def decode(frame: str | bytes) -> eio.Packet | None:
    """The Engine.IO packet in ``frame``, or None if it is not one."""
    try:
        return eio.Packet(encoded_packet=frame)
    except ValueError:  # empty, not numeric, bad base64
        return None


def polling_filter(wsgi_app: Callable, max_size: int, path: str = "/socket.io") -> Callable:
    """Keep only well-formed client packets in long-polling POST bodies (at most 16, as engineio
    allows), and answer a body above ``max_size`` with 413 unread.

    engineio would refuse that body by closing the session and waiting until its CLOSE packet
    was polled: a client with no poll pending held that request, and a green thread, forever.
    """

    def serve(environ: dict, start_response: Callable) -> Any:
        if environ.get("REQUEST_METHOD") != "POST" or not environ.get("PATH_INFO", "").startswith(path):
            return wsgi_app(environ, start_response)
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0  # engineio reads nothing either
        if length > max_size:
            start_response("413 Payload Too Large", [("Content-Type", "text/plain")])
            return [f"a message is at most {max_size} bytes".encode()]
        if length > 0:
            _filter_body(environ, length)
        return wsgi_app(environ, start_response)

    return serve


def _filter_body(environ: dict, length: int) -> None:
    kept = [p for p in _payload(environ["wsgi.input"].read(length)) if _client_packet(p)]
    body = "\x1e".join(kept[:MAX_PAYLOAD_PACKETS]).encode()
    environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(body), str(len(body))


def _payload(body: bytes) -> list[str]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return []
    if text.startswith("d="):  # JSONP form encoding, as engineio reads it
        text = parse_qs(text).get("d", [""])[0]
    return text.split("\x1e")


def _client_packet(encoded: str) -> bool:
    pkt = decode(encoded)
    return pkt is not None and pkt.packet_type in POLLING_TYPES


def _tcp_socket(ws: Any) -> Any:
    """The TCP socket under a websocket: eventlet's keeps it as ``socket``, the threading mode's
    simple-websocket wrapper as ``ws.sock``."""
    return getattr(ws, "socket", None) or getattr(getattr(ws, "ws", None), "sock", None)


def _drain(queue: Any, empty: type[Exception]) -> None:
    """Drop what waits in ``queue``: a stalled client will never read it."""
    while True:
        try:
            queue.get(block=False)
        except empty:
            return
        queue.task_done()
