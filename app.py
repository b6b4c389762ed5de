"""Pulse web server: ``python app.py`` (settings from the environment, see README)."""

import os

# eventlet must patch the stdlib before redis, kombu or celery are imported, or the server
# starves while the event receiver blocks; skip it when another async mode is configured.
if os.environ.get("PULSE_ASYNC_MODE", "eventlet") == "eventlet":
    import eventlet

    eventlet.monkey_patch()

from pulse import create_app, start_background  # noqa: E402


def main() -> None:
    app = create_app()
    start_background(app)
    socketio = app.extensions["socketio"]
    print(f"pulse: serving on http://{app.config['HOST']}:{app.config['PORT']}/", flush=True)
    socketio.run(
        app,
        host=app.config["HOST"],
        port=app.config["PORT"],
        log_output=False,
        allow_unsafe_werkzeug=True,  # threading mode only: Werkzeug is its server
    )


if __name__ == "__main__":
    main()
