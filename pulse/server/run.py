"""Running the server: load the Celery app, build the Flask app, serve it until stopped."""

import gc
import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import replace

import click
from celery import Celery
from flask import Flask

from pulse.server.http.connections import Limits, RequestsInFlight, serve_guarded
from pulse.server.push.transport import ConnectDeadline
from pulse.settings import ConfigError

from . import create_app, start_background


def load_celery_app(app_spec: str | None, broker: str | None = None,
                    result_backend: str | None = None) -> Celery:
    """The user's Celery app from ``-A`` (as ``celery -A`` finds it), else a bare app on
    ``--broker`` (a server that cannot import the project's code needs only its configuration)."""
    if app_spec:
        if os.getcwd() not in sys.path:  # as `celery -A` does: the project is where you stand
            sys.path.insert(0, os.getcwd())
        from celery.app.utils import find_app

        try:
            return find_app(app_spec)
        except (ImportError, AttributeError) as exc:
            raise click.UsageError(f"cannot load the Celery app {app_spec!r}: {exc}") from exc
    if not (broker or os.environ.get("CELERY_BROKER_URL")):
        raise click.UsageError("name the Celery app (-A proj) or its broker (--broker URL)")
    # Built by the command, not the library: there is no user's app to hand in.
    return Celery("pulse", broker=broker, backend=result_backend)


def serve_forever(celery_app: Celery, env: Mapping[str, str]) -> None:
    """Build the server for ``celery_app`` and serve it on HOST:PORT until stopped."""
    try:
        app = create_app(celery_app, env)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    limit_connections(app)
    # Everything loaded so far (Flask, Celery, eventlet, ...) lives as long as the process: keep
    # it out of the collector's full passes, which otherwise stall the server for tens of ms.
    gc.freeze()
    start_background(app)
    host, port = app.config["HOST"], app.config["PORT"]
    print(f"pulse: serving on http://{host}:{port}/", flush=True)
    if app.config["ASYNC_MODE"] == "eventlet":
        serve_eventlet(app, host, port)
    else:
        app.extensions["socketio"].run(app, host=host, port=port, log_output=False,
                                       allow_unsafe_werkzeug=True)  # Werkzeug serves threading mode


def limit_connections(app: Flask) -> None:
    """The bounds of ``pulse.server.http.connections`` that live above the HTTP server: Engine.IO
    sessions that never connect are closed; behind proxies (or in the threading mode, where
    Werkzeug accepts) the requests in flight per client address are bounded."""
    config = app.config
    socketio = app.extensions["socketio"]
    ConnectDeadline(socketio.server, config["CONNECT_TIMEOUT"]).install()
    hops = config["PROXY_HOPS"]
    if config["MAX_CONNECTIONS_PER_ADDRESS"] and (hops or config["ASYNC_MODE"] != "eventlet"):
        app.wsgi_app = RequestsInFlight(app.wsgi_app, config["MAX_CONNECTIONS_PER_ADDRESS"], hops,
                                        on_refused=app.extensions["pulse_metrics"].connection_refused)


def serve_eventlet(app: Flask, host: str, port: int) -> None:
    """What ``SocketIO.run`` does under eventlet, with TCP_NODELAY on every connection, within
    the connection bounds (``pulse.server.http.connections``).

    Without TCP_NODELAY the last segment of a response waits for the client's delayed ACK on a
    keep-alive connection: about 40 ms on every task list (accepted sockets inherit the option).
    Request lines up to 64 KiB (eventlet's default is 8 KiB): a list filter of 1000 characters
    percent-encodes to up to 12 KB, and Pulse's own 400 names the filter that is too long, where
    eventlet would answer a bare 414. A backlog of 2,048 (eventlet's is 50): a burst of
    connections, refused or not, does not make other clients' SYNs wait for a retry.
    """
    import eventlet

    config = app.config
    limits = Limits.from_config(config)
    if config["PROXY_HOPS"]:
        # Every connection comes from a proxy: RequestsInFlight bounds each forwarded address.
        limits = replace(limits, per_address=0)
    listener = eventlet.listen((host, port), backlog=2048)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    serve_guarded(app, listener, limits, app.extensions["pulse_metrics"], log_output=False,
                  url_length_limit=64 * 1024)
