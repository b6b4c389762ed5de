"""The demo project's web server: ``python app.py`` serves Pulse for ``tasks`` (settings from
the environment, see README). A project of your own runs ``celery -A proj pulse`` instead."""

import os

from pulse.settings import async_mode

# eventlet must patch the stdlib before redis, kombu or celery are imported, or the server
# starves while the event receiver blocks; skip it when another async mode is configured.
if async_mode(os.environ) == "eventlet":
    import eventlet

    eventlet.monkey_patch()

from pulse.cli import run_server  # noqa: E402


def main() -> None:
    from tasks.celery import app as celery_app
    from tasks.demo import LAUNCHABLE

    # The demo's tasks may be launched from the dashboard unless PULSE_LAUNCH_ALLOW says otherwise.
    run_server({"PULSE_LAUNCH_ALLOW": ",".join(LAUNCHABLE), **os.environ}, celery_app=celery_app)


if __name__ == "__main__":
    main()
