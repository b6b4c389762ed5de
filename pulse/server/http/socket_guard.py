"""Socket.IO's HTTP answers, held to the rules of every other response.

Engine.IO answers ``/socket.io/`` itself, below Flask, so none of Flask's security headers reached
its polling responses or its errors: this layer adds them. It also refuses JSONP polling
(``?j=``), which a ``<script>`` tag can load from any page: such a request carries no Origin, so
the socket's same-origin check could not tell it from a same-site page's. Nothing of Pulse's
uses JSONP (the pages connect over a websocket; the widget's fallback is the REST API).
"""

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from pulse.server.http.security import EVERYWHERE, POLICY

HEADERS = (*EVERYWHERE, ("Content-Security-Policy", f"{POLICY}; frame-ancestors 'none'"),
           ("X-Frame-Options", "DENY"))
REPLACED = frozenset(name.lower() for name, _ in HEADERS)
JSONP_REFUSED = b"JSONP polling is refused: connect over a websocket (transports: ['websocket'])\n"


def socket_guard(wsgi_app: Callable, path: str = "/socket.io/") -> Callable:
    """Answer JSONP requests under ``path`` with 400, and give every answer there the headers above."""

    def serve(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if not environ.get("PATH_INFO", "").startswith(path):
            return wsgi_app(environ, start_response)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
            kept = [(name, value) for name, value in headers if name.lower() not in REPLACED]
            return start_response(status, [*kept, *HEADERS], exc_info)

        if "j" in parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True):
            start("400 Bad Request", [("Content-Type", "text/plain; charset=utf-8"),
                                      ("Content-Length", str(len(JSONP_REFUSED)))])
            return [JSONP_REFUSED]
        return wsgi_app(environ, start)

    return serve
