"""The server's WSGI middleware, as one ordered stack.

Outermost first; each layer sees what the layers above it did to the request:

1. ``ProxyFix`` (``PULSE_PROXY_HOPS``; none when 0): the client's address, scheme and host, for
   everything below (the socket's same-origin check, the login throttle, the Secure cookie).
2. ``socket_guard``: JSONP polling refused (400), and every ``/socket.io/`` answer given the
   security headers Flask's responses carry (the 413 below included).
3. ``polling_filter``: a long-polling body over ``PULSE_MAX_SOCKET_MESSAGE`` answered 413 unread,
   malformed packets dropped, before Engine.IO reads them.
4. ``without_compression``: websocket compression declined.
5. Socket.IO's own middleware (installed by ``SocketIO(app)``): ``/socket.io/`` to Engine.IO.
6. Flask.
"""

from collections.abc import Callable

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from pulse.server.http.socket_guard import socket_guard
from pulse.server.push.live import without_compression
from pulse.server.push.transport import polling_filter


def proxy_fix(hops: int) -> Callable[[Callable], Callable]:
    """Believe the ``hops`` proxies in front (none if 0)."""
    if not hops:
        return lambda wsgi_app: wsgi_app
    # No x_port: a proxy's X-Forwarded-Port would put ":443" in the host, and the socket's
    # origin check compares the browser's Origin (which has no default port) with it.
    return lambda wsgi_app: ProxyFix(wsgi_app, x_for=hops, x_proto=hops, x_host=hops)


def install(app: Flask) -> None:
    """Wrap ``app.wsgi_app`` (Socket.IO's middleware around Flask by now) in the stack above."""
    config = app.config
    stack = [
        proxy_fix(config["PROXY_HOPS"]),
        socket_guard,
        lambda wsgi_app: polling_filter(wsgi_app, config["MAX_SOCKET_MESSAGE"]),
        without_compression,
    ]
    wsgi_app = app.wsgi_app
    for layer in reversed(stack):  # the last layer listed wraps the app first
        wsgi_app = layer(wsgi_app)
    app.wsgi_app = wsgi_app
