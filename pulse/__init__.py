"""Pulse: a real-time progress dashboard for Celery.

In the project's Celery module::

    import pulse
    pulse.install(app)

In its tasks: ``from pulse import report_progress, fail, TaskFailure``. The dashboard runs with
``celery -A proj pulse``. Importing this package imports nothing else: each name below is loaded
on first use, so producers and workers never load the web server (Flask, Socket.IO, eventlet),
and ``app.py`` can read its settings before eventlet patches the standard library.
"""

from importlib import import_module
from typing import Any

__version__ = "0.2.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "install": "pulse.agent.install",
    "report_progress": "pulse.agent.progress",
    "PROGRESS": "pulse.agent.progress",
    "fail": "pulse.agent.failure",
    "TaskFailure": "pulse.agent.failure",
    "mint_token": "pulse.agent.tokens",
    "read_token": "pulse.agent.tokens",
    "grant_key_from_env": "pulse.settings",
    "ConfigError": "pulse.settings",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pulse' has no attribute {name!r}")
