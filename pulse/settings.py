"""Every Pulse setting, read from the environment in this one place, for both sides.

``agent_settings`` is what producers and workers need (``pulse.install``), ``load_config`` what
the web server needs, and ``async_mode`` the one setting ``app.py`` reads before anything else
is imported. Only the standard library is imported here, so ``app.py`` can read the async mode
before eventlet patches it. Errors name the key, the bad value and how to fix it.
"""

import hashlib
import hmac
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

ASYNC_MODES = ("eventlet", "threading")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the key and how to fix it."""


def _read(env: Mapping[str, str], key: str, cast: Callable[[str], Any], default: Any) -> Any:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return cast(raw)
    except ValueError as exc:
        raise ConfigError(f"{key}={raw!r} is invalid: {exc}") from None


def _port(raw: str) -> int:
    port = int(raw)
    if not 0 < port < 65536:
        raise ValueError("a port is 1-65535")
    return port


def _at_least(minimum: float) -> Callable[[str], float]:
    def cast(raw: str) -> float:
        value = float(raw)
        if value < minimum:
            raise ValueError(f"must be at least {minimum}")
        return value

    return cast


def _between(minimum: float, maximum: float) -> Callable[[str], float]:
    def cast(raw: str) -> float:
        value = float(raw)
        if not minimum <= value <= maximum:
            raise ValueError(f"must be from {minimum:g} to {maximum:g}")
        return value

    return cast


def _origins(raw: str) -> tuple[str, ...]:
    origins = _names(raw)
    for origin in origins:
        scheme, _, rest = origin.partition("://")
        if scheme not in ("http", "https") or not rest or "/" in rest:
            raise ValueError(f"{origin!r} is not an origin: write scheme://host[:port], no path")
    return origins


def _whole(raw: str) -> int:
    number = int(raw)
    if number < 0:
        raise ValueError("must be a whole number, 0 or more")
    return number


def _flag(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("use true or false")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level(raw: str) -> int:
    name = raw.strip().upper()
    if name not in LOG_LEVELS:
        raise ValueError(f"use one of {', '.join(LOG_LEVELS)}")
    return logging.getLevelName(name)


def _names(raw: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in raw.split(",") if name.strip())


def load_config(env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """Read every web setting from ``env``; raises ConfigError naming the bad key."""
    token = env.get("PULSE_TOKEN", "")
    if len(token) < 16:
        raise ConfigError(
            "PULSE_TOKEN must be set to a random string of at least 16 characters "
            "(`make run` generates one; e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    viewer = env.get("PULSE_VIEWER_TOKEN") or None
    if viewer is not None and (len(viewer) < 16 or viewer == token):
        raise ConfigError("PULSE_VIEWER_TOKEN must be at least 16 characters and differ from PULSE_TOKEN")
    mode = async_mode(env)
    master = _master_key(env)
    session_key = _derive(master, b"pulse session cookies and CSRF")
    grant_key = grant_key_from_env(env)
    if grant_key in (token, viewer, env.get("PULSE_SECRET_KEY")):
        raise ConfigError("PULSE_GRANT_KEY must differ from PULSE_TOKEN, PULSE_VIEWER_TOKEN and "
                          "PULSE_SECRET_KEY: host apps hold it, and it must open nothing else")
    return {
        "PULSE_TOKEN": token,
        "VIEWER_TOKEN": viewer,
        # Signs session cookies (and so their CSRF values). Derived one-way from the master key,
        # which never leaves the Pulse servers, so the grant key host apps hold cannot make one.
        "SECRET_KEY": session_key,
        # Signs per-task and group tokens, and nothing else: the key host apps get.
        "GRANT_KEY": grant_key,
        # The server's bounds on a grant, whatever its host wrote into it: an issue time at most
        # this far ahead of the server's clock, and a lifetime at most GRANT_MAX_TTL from it.
        "GRANT_SKEW": _read(env, "PULSE_GRANT_SKEW", _at_least(0.0), 30.0),
        "GRANT_MAX_TTL": _read(env, "PULSE_GRANT_MAX_TTL", _duration, 7 * 86400.0),
        # A login session lasts this long at most; logout or a new token ends it sooner.
        "SESSION_LIFETIME": _read(env, "PULSE_SESSION_LIFETIME", _duration, 7 * 86400.0),
        "EMBED_ORIGINS": _read(env, "PULSE_EMBED_ORIGINS", _origins, ()),
        "ASYNC_MODE": mode,
        "HOST": env.get("HOST") or "127.0.0.1",
        "PORT": _read(env, "PORT", _port, 5000),
        # Task names the dashboard and POST /api/tasks may launch; none unless listed.
        "LAUNCH_ALLOW": _read(env, "PULSE_LAUNCH_ALLOW", _names, ()),
        "SNAPSHOT_SIZE": _read(env, "PULSE_SNAPSHOT_SIZE", int, 200),
        # The dashboard gets at most one `tasks` push per interval; 0.1 s caps it at 10/s.
        "PUSH_INTERVAL": _read(env, "PULSE_PUSH_INTERVAL", _at_least(0.1), 0.1),
        # A running task whose worker sent no heartbeat for this long is marked lost.
        "LOST_AFTER": _read(env, "PULSE_LOST_AFTER", _at_least(1.0), 30.0),
        "MAINTENANCE_INTERVAL": _read(env, "PULSE_MAINTENANCE_INTERVAL", _at_least(0.1), 2.0),
        "PRUNE_INTERVAL": _read(env, "PULSE_PRUNE_INTERVAL", _at_least(1.0), 60.0),
        # Broadcasts asking the workers for their queues and running tasks (each waits 1 s).
        "WORKER_CHECK_INTERVAL": _read(env, "PULSE_WORKER_CHECK_INTERVAL", _at_least(1.0), 10.0),
        "MONITOR_IDLE_TIMEOUT": _read(env, "PULSE_MONITOR_IDLE_TIMEOUT", _at_least(1.0), 10.0),
        "MAX_CONTENT_LENGTH": _read(env, "PULSE_MAX_BODY", int, 64 * 1024),
        # The largest Socket.IO message a client may send (a subscribe is ~100 bytes); above it a
        # websocket is closed (1009) and a polling POST gets 413 (see pulse.transport).
        "MAX_SOCKET_MESSAGE": int(_read(env, "PULSE_MAX_SOCKET_MESSAGE", _at_least(1024), 64 * 1024)),
        # Packets waiting to be written to one client before it counts as stalled and is
        # disconnected: a healthy one has a handful, the dashboard gets ~12 a second.
        "CLIENT_QUEUE": int(_read(env, "PULSE_CLIENT_QUEUE", _at_least(16), 256)),
        # How often the server disconnects sockets whose per-task token expired or was revoked.
        "TOKEN_RECHECK_INTERVAL": _read(env, "PULSE_TOKEN_RECHECK_INTERVAL", _at_least(0.5), 5.0),
        # Failed credential checks (login, bearer tokens, per-task tokens, Socket.IO auth) allowed
        # per client address and minute; then 429 until the minute ends.
        "AUTH_ATTEMPTS": int(_read(env, "PULSE_AUTH_ATTEMPTS", _at_least(1), 10)),
        # Reverse proxies in front of Pulse whose X-Forwarded-For/-Proto/-Host are believed; 0 believes
        # none, since anyone can send those headers (and pick their address or scheme with them).
        "PROXY_HOPS": _read(env, "PULSE_PROXY_HOPS", _whole, 0),
        # Connection bounds (pulse.server.http.connections): a connection's first request must have
        # sent its headers this long after the accept, a kept-alive one its next request this long
        # after the last answer (also the longest a read or write may stall within a request).
        "HEADER_TIMEOUT": _read(env, "PULSE_HEADER_TIMEOUT", _at_least(0.5), 10.0),
        "KEEPALIVE_TIMEOUT": _read(env, "PULSE_KEEPALIVE_TIMEOUT", _at_least(1.0), 30.0),
        # Connections per client address (behind PULSE_PROXY_HOPS: requests in flight per forwarded
        # address), 0 for no limit; an office behind one NAT, each dashboard a socket and a few
        # kept-alive connections, stays far below it. And in all (lowered to what ulimit -n allows).
        "MAX_CONNECTIONS_PER_ADDRESS": _read(env, "PULSE_MAX_CONNECTIONS_PER_ADDRESS", _whole, 200),
        "MAX_CONNECTIONS": _read(env, "PULSE_MAX_CONNECTIONS", _positive_whole, 10_000),
        # An Engine.IO session that has not connected to a Socket.IO namespace by then is closed.
        "CONNECT_TIMEOUT": _read(env, "PULSE_CONNECT_TIMEOUT", _at_least(0.5), 5.0),
        # GET /api/tasks/<id>?wait= requests waiting at once per credential (more: 429 at once).
        "MAX_WAITS_PER_CREDENTIAL": _read(env, "PULSE_MAX_WAITS_PER_CREDENTIAL", _positive_whole, 20),
        # The most tasks one bulk action may select (a request may ask for fewer): a filter that
        # selects more is refused, not cut, so an operator never acts on an arbitrary part.
        "BULK_CAP": _read(env, "PULSE_BULK_CAP", _positive_whole, 10_000),
        # How often the alert rules are judged, and how long a webhook may take to answer (then the
        # notice is retried, with backoff).
        "ALERT_INTERVAL": _read(env, "PULSE_ALERT_INTERVAL", _at_least(0.5), 5.0),
        # At most 30 s: a delivery is claimed for 60 s, and a second attempt must not start while the
        # first still waits for its answer.
        "ALERT_TIMEOUT": _read(env, "PULSE_ALERT_TIMEOUT", _between(0.5, 30.0), 10.0),
        # Always Secure; otherwise only on requests that came over HTTPS (pulse.security asks each one).
        "SESSION_COOKIE_SECURE": _read(env, "PULSE_SECURE_COOKIE", _flag, False),
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_NAME": "pulse_session",
    }


def async_mode(env: Mapping[str, str] = os.environ) -> str:
    """PULSE_ASYNC_MODE: ``eventlet`` (default, also when set but empty) or ``threading``."""
    mode = (env.get("PULSE_ASYNC_MODE") or "").strip() or "eventlet"
    if mode not in ASYNC_MODES:
        raise ConfigError(f"PULSE_ASYNC_MODE={mode!r} is invalid: use one of {', '.join(ASYNC_MODES)}")
    return mode


MIN_KEY_LENGTH = 32


def _master_key(env: Mapping[str, str]) -> bytes:
    """PULSE_SECRET_KEY, else a key derived from PULSE_TOKEN: only the Pulse servers hold it."""
    secret = env.get("PULSE_SECRET_KEY") or ""
    if secret:
        if len(secret) < MIN_KEY_LENGTH:
            raise ConfigError(f"PULSE_SECRET_KEY must be a random string of at least {MIN_KEY_LENGTH} "
                              "characters: python -c 'import secrets; print(secrets.token_urlsafe(32))'")
        return secret.encode()
    token = env.get("PULSE_TOKEN") or ""
    if not token:
        raise ConfigError("set PULSE_GRANT_KEY (or, on a Pulse server, PULSE_TOKEN) to mint tokens")
    return _derive(token.encode(), b"pulse master key").encode()


def _derive(key: bytes, purpose: bytes) -> str:
    return hmac.new(key, purpose, hashlib.sha256).hexdigest()


def grant_key_from_env(env: Mapping[str, str] = os.environ) -> str:
    """The key that signs per-task and group tokens, and nothing else: what a host app holds.

    PULSE_GRANT_KEY, else derived one-way from the servers' master key (PULSE_SECRET_KEY, else
    PULSE_TOKEN) as the server derives it; ``pulse --print-grant-key`` prints that value.
    """
    grant_key = env.get("PULSE_GRANT_KEY") or ""
    if grant_key:
        if len(grant_key) < MIN_KEY_LENGTH:
            raise ConfigError(f"PULSE_GRANT_KEY must be a random string of at least {MIN_KEY_LENGTH} "
                              "characters")
        return grant_key
    return _derive(_master_key(env), b"pulse task and group grants")


def _duration(raw: str) -> float:
    raw = raw.strip().lower()
    unit = _UNITS.get(raw[-1])
    try:
        value = float(raw[:-1]) * unit if unit else float(raw)
    except ValueError:
        raise ValueError("not a duration: use seconds or e.g. 90s, 30m, 12h, 7d") from None
    if value <= 0:
        raise ValueError("must be positive")
    return value


def _positive_whole(raw: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError("must be a positive whole number")
    return int(raw)


def _redis_url(raw: str) -> str:
    if raw.split("://", 1)[0] not in ("redis", "rediss", "unix"):
        raise ValueError("must be a Redis URL: redis://host:port/db, rediss://... or unix://...")
    return raw


@dataclass(frozen=True)
class AgentSettings:
    """What ``pulse.install`` needs in producers, workers and the server alike."""

    redis_url: str | None  # the registry's Redis when the result backend is not Redis
    redis_timeout: float  # Pulse's own Redis client (PULSE_REDIS_URL): connect and read timeouts
    progress_interval: float
    worker_gc_interval: float
    retention: float
    registry_cap: int
    registry_prefix: str
    task_logs: bool  # capture the running task's log lines in workers (pulse.agent.logs)
    log_level: int
    log_loggers: tuple[str, ...]  # loggers captured besides Celery's task logger


def agent_settings(env: Mapping[str, str] = os.environ) -> AgentSettings:
    """Read the producer and worker settings from ``env``; raises ConfigError naming the bad key."""
    return AgentSettings(
        redis_url=_read(env, "PULSE_REDIS_URL", _redis_url, None),
        redis_timeout=_read(env, "PULSE_REDIS_TIMEOUT", _at_least(0.0), 5.0),
        # report_progress calls closer together than this return at once (0: every call writes).
        progress_interval=_read(env, "PULSE_PROGRESS_INTERVAL", _at_least(0.0), 0.25),
        # Seconds between full garbage collections after tasks in a worker process (0: never).
        worker_gc_interval=_read(env, "PULSE_WORKER_GC_INTERVAL", _at_least(0.0), 5.0),
        retention=_read(env, "PULSE_RETENTION", _duration, 7 * 86400.0),
        registry_cap=_read(env, "PULSE_REGISTRY_CAP", _positive_whole, 200_000),
        registry_prefix=env.get("PULSE_REGISTRY_PREFIX") or "pulse:",
        task_logs=_read(env, "PULSE_TASK_LOGS", _flag, True),
        log_level=_read(env, "PULSE_LOG_LEVEL", _log_level, logging.INFO),
        # e.g. "myapp,celery.redirected" (the latter: what tasks print, as Celery redirects it).
        log_loggers=_read(env, "PULSE_LOG_LOGGERS", _names, ()),
    )
