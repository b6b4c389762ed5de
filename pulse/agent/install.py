"""``pulse.install(app)``: turn on, on the user's own Celery app, everything Pulse needs.

Task events and sent events, ``task_track_started`` and ``result_extended``; the registry
(recording at the source: ``scheduled`` before publish, the worker's signals); bounded failure
events; in workers, the periodic garbage collection and the running task's log lines. The
user's other settings are left alone. Pulse's state for the app lives on ``app.pulse`` (an
``Agent``), never in a module global.
"""

import logging
import os
from collections.abc import Mapping
from functools import cached_property
from typing import Any

import redis
from celery import Celery, signals
from celery.app.backends import by_url
from celery.backends.redis import RedisBackend

from pulse.record.logs import TaskLogs
from pulse.record.registry import Registry
from pulse.settings import AgentSettings, ConfigError, agent_settings

from . import collect, lifecycle, request
from . import logs as task_logs
from .progress_writer import make_writer

log = logging.getLogger(__name__)

# What Pulse turns on in the user's app: each is needed for a part of the task's story.
CELERY_SETTINGS = {
    "task_track_started": True,  # `running` from the worker's own STARTED state
    "task_send_sent_event": True,  # task-sent, on the producer's side
    "worker_send_task_events": True,  # the lifecycle events, as `celery worker -E` does
    "result_extended": True,  # name, args and worker in the stored result
}


class Agent:
    """Pulse's per-app state in a producer, worker or server: settings, registry, timers."""

    def __init__(self, app: Celery, settings: AgentSettings) -> None:
        self.app = app
        self.settings = settings
        self.registry = Registry(self._registry_client, prefix=settings.registry_prefix,
                                 retention=settings.retention, cap=settings.registry_cap)
        self.next_prune = 0.0  # monotonic time of this process's next registry prune
        self.next_collect = 0.0  # monotonic time of this process's next garbage collection

    @cached_property
    def progress_writer(self) -> Any:
        """The one-round-trip progress writer (or None), made at the first progress report."""
        return make_writer(self)

    def _registry_client(self) -> redis.Redis:
        # Resolved at first use: the user may configure the result backend after install().
        if self.settings.redis_url:
            timeout = self.settings.redis_timeout or None
            return redis.Redis.from_url(self.settings.redis_url, socket_timeout=timeout,
                                        socket_connect_timeout=timeout)
        if backend_is_redis(self.app):
            return self.app.backend.client
        raise ConfigError(registry_location_error(self.app))

    def registry_location(self) -> str:
        """Where the registry lives (for messages); raises ConfigError when nowhere."""
        if self.settings.redis_url:
            return f"PULSE_REDIS_URL ({_hide_password(self.settings.redis_url)})"
        if backend_is_redis(self.app):
            return f"the result backend ({_hide_password(str(self.app.conf.result_backend))})"
        raise ConfigError(registry_location_error(self.app))


def backend_is_redis(app: Celery) -> bool:
    """Whether the app's result backend is Redis, told from its setting (building the backend
    here would fix its class before the server switches it to a lookup-only one)."""
    try:
        cls, _url = by_url(app.conf.result_backend, app.loader)
    except Exception:  # no backend, or one that cannot be loaded: not Redis either way
        return False
    return isinstance(cls, type) and issubclass(cls, RedisBackend)


def registry_location_error(app: Celery) -> str:
    backend = str(app.conf.result_backend or "none")
    return (f"Pulse keeps its task registry in Redis, but this app's result backend is "
            f"{_hide_password(backend)!r}: use a Redis result backend, or set PULSE_REDIS_URL "
            f"(e.g. redis://127.0.0.1:6379/0)")


def _hide_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        credentials, _, host = rest.rpartition("@")
        return f"{scheme}://{credentials.split(':')[0]}:***@{host}" if ":" in credentials else url
    return url


def install(app: Celery, env: Mapping[str, str] | None = None) -> Agent:
    """Make ``app`` a Pulse app; settings from ``env`` (default: the environment). Idempotent:
    a second call returns the same ``Agent``. Call it right after ``Celery(...)``."""
    agent = getattr(app, "pulse", None)
    if isinstance(agent, Agent):
        return agent
    agent = Agent(app, agent_settings(os.environ if env is None else env))
    app.pulse = agent
    app.conf.update(CELERY_SETTINGS)
    lifecycle.record_publishing(app)
    signals.worker_init.connect(_on_worker_init, weak=False, dispatch_uid="pulse.worker_init")
    lifecycle.install()
    collect.install()
    return agent


def agent_of(app: Any) -> Agent | None:
    """The app's ``Agent``, or None for a Celery app Pulse was not installed in."""
    agent = getattr(app, "pulse", None)
    return agent if isinstance(agent, Agent) else None


def _on_worker_init(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    agent = agent_of(app)
    if agent is None:
        return
    request.bound_failure_events(app)
    if agent.settings.task_logs:
        task_logs.install(app, TaskLogs(agent.registry), agent.settings.log_level, agent.settings.log_loggers)
    try:
        log.info("pulse: recording tasks in %s", agent.registry_location())
    except ConfigError as exc:  # the worker runs on; its tasks are then known from events only
        log.error("pulse: %s", exc)
