"""Pulse web server: ``python app.py`` (settings from the environment, see README)."""

import os

# eventlet must patch the stdlib before redis, kombu or celery are imported, or the server
# starves while the event receiver blocks; skip it when another async mode is configured.
if os.environ.get("PULSE_ASYNC_MODE", "eventlet") == "eventlet":
    import eventlet

    eventlet.monkey_patch()

import gc  # noqa: E402
import socket  # noqa: E402

from pulse import create_app, start_background  # noqa: E402


def main() -> None:
    app = create_app()
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


def serve_eventlet(app, host: str, port: int) -> None:
    """What ``SocketIO.run`` does under eventlet, with TCP_NODELAY on every connection.

    Without it the last segment of a response waits for the client's delayed ACK on a
    keep-alive connection: about 40 ms on every task list (accepted sockets inherit the option).
    Request lines up to 64 KiB (eventlet's default is 8 KiB): a list filter of 1000 characters
    percent-encodes to up to 12 KB, and Pulse's own 400 names the filter that is too long, where
    eventlet would answer a bare 414.
    """
    import eventlet.wsgi

    listener = eventlet.listen((host, port))
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    eventlet.wsgi.server(listener, app, log_output=False, url_length_limit=64 * 1024)


if __name__ == "__main__":
    main()
