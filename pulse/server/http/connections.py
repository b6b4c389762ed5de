"""Bounds on the connections the server holds, so that one client address cannot take them all.

Under eventlet, every connection is a green thread from one pool, from accept to close. Left at
eventlet's defaults (1,024 of them, no timeout, keep-alive without end), about a thousand idle or
slowloris connections from one address stopped every page, the API, ``/healthz`` and the sockets.

- At accept time, before any green thread is spent: at most ``per_address`` connections from one
  client address (``PULSE_MAX_CONNECTIONS_PER_ADDRESS``) and ``total`` in all
  (``PULSE_MAX_CONNECTIONS``). Over either, the connection gets a 503 that says why, and is closed.
- Deadlines, not per-read timeouts (a slowloris sending a byte every few seconds never trips a
  per-read timeout): a connection's first request must have sent all its headers within
  ``header_timeout`` of the accept, and each later request on a kept-alive connection within
  ``keepalive_timeout`` of the previous answer; otherwise the connection is closed. Once a
  request's headers are in, the deadline is off: a websocket stays open for hours (Engine.IO's
  pings keep it alive; python-engineio gives its socket a read timeout of ping interval + ping
  timeout, 45 s). Within a request, each read or write may stall ``keepalive_timeout`` at most.
- Behind trusted proxies (``PULSE_PROXY_HOPS``) every connection comes from a proxy, so the
  per-address bound counts the requests in flight per forwarded address instead
  (``RequestsInFlight``, a WSGI layer; a websocket is in flight as long as it is open). The
  threading mode (Werkzeug, for development) gets that layer too, per connecting address.
"""

import errno
import logging
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from werkzeug.wsgi import ClosingIterator

from pulse.server.http.metrics import Metrics

log = logging.getLogger(__name__)

RETRY_AFTER = 10  # seconds a refused client is told to wait: about a header timeout
# Descriptors kept free for everything that is not a client connection (Redis, the broker, files).
RESERVED_DESCRIPTORS = 256
# accept() failures that are the machine's limits, not the listener's end: wait and accept again.
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# accept() failures that are one connection's (a client that reset before it was accepted; Linux
# passes pending network errors this way): accept the next. eventlet's loop would end on these.
ONE_CONNECTION = frozenset({errno.ECONNABORTED, errno.ECONNRESET, errno.EPROTO, errno.ENETDOWN,
                            errno.ENOPROTOOPT, errno.EHOSTDOWN, errno.ENONET, errno.EHOSTUNREACH,
                            errno.EOPNOTSUPP, errno.ENETUNREACH})


@dataclass(frozen=True)
class Limits:
    """The connection bounds of one server (``PULSE_*`` settings, see ``from_config``)."""

    per_address: int  # connections (or, behind proxies, requests in flight) per client address; 0: none
    total: int  # connections in all, and so green threads serving them
    header_timeout: float  # seconds from accept to a first request's complete headers
    keepalive_timeout: float  # seconds from an answer to the next request's complete headers

    @classmethod
    def from_config(cls, config: Any) -> "Limits":
        return cls(per_address=config["MAX_CONNECTIONS_PER_ADDRESS"], total=config["MAX_CONNECTIONS"],
                   header_timeout=config["HEADER_TIMEOUT"], keepalive_timeout=config["KEEPALIVE_TIMEOUT"])


class Tally:
    """Open connections (or requests in flight) per client address, within the limits."""

    def __init__(self, per_address: int, total: int,
                 on_refused: Callable[[str], None] = lambda limit: None) -> None:
        self.per_address = per_address
        self.total = total
        self.on_refused = on_refused  # with "total" or "address": which limit refused one
        self.open = 0
        self.refused = 0
        self._by_address: dict[str, int] = {}
        self._lock = threading.Lock()  # threading mode: requests run in threads

    def admit(self, address: str) -> str | None:
        """Count one more for ``address``; or, over a limit, the reason it is refused."""
        with self._lock:
            held = self._by_address.get(address, 0)
            if self.total and self.open >= self.total:
                limit = "total"
                reason = f"the server holds its most connections ({self.total}); try again shortly"
            elif self.per_address and held >= self.per_address:
                limit = "address"
                reason = (f"too many connections from your address {address} ({self.per_address} at most); "
                          "close some, or try again shortly")
            else:
                self._by_address[address] = held + 1
                self.open += 1
                return None
            self.refused += 1
        self.on_refused(limit)
        return reason

    def release(self, address: str) -> None:
        with self._lock:
            held = self._by_address.get(address, 0) - 1
            if held > 0:
                self._by_address[address] = held
            else:
                self._by_address.pop(address, None)
            self.open -= 1

    def held(self, address: str) -> int:
        return self._by_address.get(address, 0)


def refusal(reason: str) -> bytes:
    """A whole 503 answer saying why, for a connection refused before any request was read."""
    body = f"503 Service Unavailable: {reason}\n".encode()
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\nRetry-After: %d\r\nConnection: close\r\n\r\n%s"
            % (len(body), RETRY_AFTER, body))


def refuse(client: Any, reason: str) -> None:
    """Answer 503 on a fresh connection and close it, without ever waiting on it."""
    try:
        client.setblocking(False)
        try:
            # What the client sent already: closing with it unread would reset the connection,
            # and the reset can overtake the answer.
            client.recv(65536)
        except OSError:
            pass  # nothing sent yet
        client.send(refusal(reason))  # a few hundred bytes into an empty send buffer
        client.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the client is gone already
    finally:
        client.close()


class GuardedListener:
    """A listening socket whose ``accept`` hands over only connections within the limits.

    Refused connections are answered and closed here, in the accept loop: no green thread is
    spent on them. Running out of descriptors waits and accepts again, and a connection reset
    before its accept is skipped (eventlet's loop would stop serving on either).
    """

    def __init__(self, sock: Any, tally: Tally, pause: Callable[[float], None]) -> None:
        self._sock = sock
        self.tally = tally
        self._pause = pause
        self._warned_at = -60.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def accept(self) -> tuple[Any, Any]:
        while True:
            try:
                client, address = self._sock.accept()
            except OSError as exc:
                if exc.errno in ONE_CONNECTION:
                    continue
                if exc.errno not in OUT_OF_RESOURCES:
                    raise
                if time.monotonic() - self._warned_at > 10:  # one line per 10 s, not 10 a second
                    self._warned_at = time.monotonic()
                    log.warning("pulse: cannot accept connections (%s); retrying every 0.1 s", exc.strerror)
                self._pause(0.1)
                continue
            reason = self.tally.admit(_host(address))
            if reason is None:
                return client, address
            refuse(client, reason)


class GuardedPool:
    """eventlet's green pool for the server's connections, each released from the tally at its end."""

    def __init__(self, size: int, tally: Tally) -> None:
        import eventlet

        self._pool = eventlet.GreenPool(size)
        self.tally = tally

    def spawn(self, function: Callable[[Any], Any], connection: list) -> Any:
        address = _host(connection[0])

        def serve(conn: list) -> Any:
            try:
                return function(conn)
            finally:
                self.tally.release(address)

        return self._pool.spawn(serve, connection)

    def waitall(self) -> None:
        self._pool.waitall()


class HeaderTimeout(socket.timeout):
    """The request's headers did not arrive in time (eventlet closes the connection quietly)."""


def guarded_protocol(limits: Limits) -> type:
    """eventlet's HTTP protocol with deadlines on each request's headers (see the module)."""
    import eventlet
    from eventlet.wsgi import HttpProtocol

    class GuardedProtocol(HttpProtocol):
        _served = 0
        _deadline: Any = None

        def handle_one_request(self) -> None:
            limit = limits.keepalive_timeout if self._served else limits.header_timeout
            self._served += 1
            self._deadline = eventlet.Timeout(limit, HeaderTimeout(f"no complete request within {limit:g} s"))
            try:
                super().handle_one_request()
            finally:
                self._deadline.cancel()

        def get_environ(self) -> dict:
            # The headers are in: what follows is the app's (an answer, a long poll, a websocket).
            self._deadline.cancel()
            return super().get_environ()

    return GuardedProtocol


def descriptor_room(wanted: int) -> int:
    """Raise this process's open-files limit towards ``wanted`` client connections (plus a
    reserve); returns how many client connections fit under it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + RESERVED_DESCRIPTORS
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # keep the soft limit we have
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - RESERVED_DESCRIPTORS))


def serve_guarded(app: Callable, sock: Any, limits: Limits, metrics: Metrics | None = None,
                  **options: Any) -> None:
    """Serve ``app`` on the listening ``sock`` with eventlet's WSGI server, within ``limits``;
    ``metrics`` counts the refusals and shows the connections open."""
    import eventlet
    import eventlet.wsgi

    total = descriptor_room(limits.total)
    if total < limits.total:
        log.warning("pulse: at most %d connections (PULSE_MAX_CONNECTIONS=%d): this process may open "
                    "only %d files (ulimit -n)", total, limits.total, total + RESERVED_DESCRIPTORS)
    tally = Tally(limits.per_address, total)
    if metrics is not None:
        tally.on_refused = metrics.connection_refused
        metrics.open_connections.set_function(lambda: tally.open)
    eventlet.wsgi.server(
        GuardedListener(sock, tally, eventlet.sleep), app, custom_pool=GuardedPool(total, tally),
        protocol=guarded_protocol(limits),
        # A kept-alive connection is told how long it may stay idle (Keep-Alive: timeout=N), and
        # within a request each read or write may stall that long at most.
        keepalive=limits.keepalive_timeout, socket_timeout=limits.keepalive_timeout, **options)


class RequestsInFlight:
    """A WSGI layer counting the requests in flight per client address, refusing those over
    ``per_address`` with 503: the per-address bound behind proxies (``hops`` trusted, the client's
    address read from X-Forwarded-For as ProxyFix reads it) and in the threading mode."""

    def __init__(self, app: Callable, per_address: int, hops: int,
                 on_refused: Callable[[str], None] = lambda limit: None) -> None:
        self.app = app
        self.hops = hops
        self.tally = Tally(per_address, 0, on_refused)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        address = client_address(environ, self.hops)
        reason = self.tally.admit(address)
        if reason is not None:
            reason = reason.replace("connections", "requests in flight", 1)
            body = f"503 Service Unavailable: {reason}\n".encode()
            # No Connection: close: WSGI forbids hop-by-hop headers, and the connection is the proxy's.
            start_response("503 Service Unavailable", [
                ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                ("Retry-After", str(RETRY_AFTER))])
            return [body]
        try:
            answer = self.app(environ, start_response)
        except BaseException:
            self.tally.release(address)
            raise
        return ClosingIterator(answer, [lambda: self.tally.release(address)])


def client_address(environ: dict, hops: int) -> str:
    """The client's address: the ``hops``-th X-Forwarded-For entry from the right (as ProxyFix
    believes it), else the connecting address."""
    if hops:
        forwarded = [part.strip() for part in environ.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        if len(forwarded) >= hops and forwarded[-hops]:
            return forwarded[-hops]
    return environ.get("REMOTE_ADDR") or "unknown"


def _host(address: Any) -> str:
    """The host part of a socket address (IPv4 or IPv6); a Unix socket's path as it is."""
    return address[0] if isinstance(address, tuple) else str(address)
