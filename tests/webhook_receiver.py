"""A real local HTTP server that takes webhook POSTs, for the alert tests: it records each body, and
can answer slowly, answer an error, or be stopped and started again on the same port (a receiver
that is down)."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """``answer`` (the HTTP status) and ``delay`` (seconds before answering) may change at any time."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.attempts: list[tuple[float, int]] = []  # (time, status answered), every POST
        self.answer = 200
        self.delay = 0.0
        self.port = _free_port()
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                time.sleep(receiver.delay)
                status = receiver.answer
                with receiver._lock:
                    receiver.attempts.append((time.time(), status))
                    if status < 300:
                        receiver.bodies.append(json.loads(raw))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"no" if status >= 300 else b"ok")

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening: a connection to the port is refused until ``start()``."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def taken(self, status: str | None = None) -> list[dict]:
        """The bodies taken (answered 2xx), of that notice status if given."""
        with self._lock:
            return [b for b in self.bodies if status is None or b.get("status") == status
                    or b.get("text", "").startswith(str(status).upper())]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
