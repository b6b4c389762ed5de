"""``pulse`` and ``celery -A proj pulse``: serve the dashboard for a Celery app.

Kept light on purpose: Celery loads every ``celery.commands`` plugin on each ``celery`` call,
and the eventlet server must patch the standard library before Celery, kombu or redis are
imported. So ``celery -A proj pulse`` replaces itself with ``python -m pulse.cli -A proj``, a
fresh process in which ``main`` patches first and imports the rest after.
"""

import os
import sys
from collections.abc import Mapping

import click

from pulse.settings import ConfigError, async_mode, grant_key_from_env

OPTIONS = [
    click.option("--host", envvar="HOST", help="Address to listen on (HOST; default 127.0.0.1)."),
    click.option("--port", envvar="PORT", help="Port to listen on (PORT; default 5000)."),
    click.option("--async-mode", envvar="PULSE_ASYNC_MODE", type=click.Choice(["eventlet", "threading"]),
                 help="eventlet (default) or threading (PULSE_ASYNC_MODE)."),
]


def _options(func):
    for option in reversed(OPTIONS):
        func = option(func)
    return func


def _overrides(host: str | None, port: str | None, mode: str | None) -> dict[str, str]:
    """Command line options as the environment keys the settings module reads."""
    pairs = {"HOST": host, "PORT": port, "PULSE_ASYNC_MODE": mode}
    return {key: str(value) for key, value in pairs.items() if value}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-A", "--app", "app_spec", envvar="CELERY_APP",
              help="The Celery app, as for `celery -A` (module or module:attribute).")
@click.option("-b", "--broker", help="Broker URL, for a server that cannot import the project's code.")
@click.option("--result-backend", help="Result backend URL (with --broker).")
@click.option("--print-grant-key", is_flag=True,
              help="Print the key host apps mint widget tokens with (PULSE_GRANT_KEY), then exit.")
@_options
def serve(app_spec: str | None, broker: str | None, result_backend: str | None, print_grant_key: bool,
          host: str | None, port: str | None, async_mode: str | None) -> None:
    """Serve Pulse's dashboard, API and live updates for a Celery app.

    The other settings come from the environment (PULSE_TOKEN, PULSE_VIEWER_TOKEN, ...; see the
    README). Stop it with Ctrl-C.
    """
    if print_grant_key:  # derived from the servers' keys unless PULSE_GRANT_KEY is set
        try:
            click.echo(grant_key_from_env(os.environ))
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from exc
        return
    env = {**os.environ, **_overrides(host, port, async_mode)}
    run_server(env, app_spec=app_spec, broker=broker, result_backend=result_backend)


def run_server(env: Mapping[str, str], app_spec: str | None = None, broker: str | None = None,
               result_backend: str | None = None, celery_app=None) -> None:
    """Patch for eventlet if configured, load the Celery app, build the server and serve."""
    if async_mode(env) == "eventlet":  # before Celery, kombu or redis are imported
        import eventlet

        eventlet.monkey_patch()
    from pulse.server.run import load_celery_app, serve_forever

    if celery_app is None:
        celery_app = load_celery_app(app_spec, broker, result_backend)
    serve_forever(celery_app, env)


@click.command("pulse", context_settings={"help_option_names": ["-h", "--help"]})
@_options
@click.pass_context
def celery_command(ctx: click.Context, host: str | None, port: str | None, async_mode: str | None) -> None:
    """Serve Pulse's dashboard for this app (settings: see the README)."""
    app_spec = ctx.parent.params.get("app") if ctx.parent is not None else None
    argv = [sys.executable, "-m", "pulse.cli"]
    if isinstance(app_spec, str) and app_spec:
        argv += ["-A", app_spec]
    for flag, value in (("--host", host), ("--port", port), ("--async-mode", async_mode)):
        if value:
            argv += [flag, str(value)]
    # Celery's own --broker/--result-backend are in CELERY_BROKER_URL/CELERY_RESULT_BACKEND now,
    # and the new process reads them from there.
    sys.stdout.flush()
    os.execv(sys.executable, argv)


def main() -> None:
    """The ``pulse`` console script."""
    serve(prog_name="pulse")


if __name__ == "__main__":
    main()
