"""The web server's settings, read from the environment in this one place.

Celery's own settings (REDIS_URL, progress interval) are read by ``tasks.celery``; the web
server builds its Celery app from the same mapping, so both sides always agree.
"""

import os
from collections.abc import Callable, Mapping
from typing import Any

from tasks.tokens import secret_from_env

ASYNC_MODES = ("eventlet", "threading")
DEMO_TASKS = ("tasks.demo.count", "tasks.demo.fail_with_details", "tasks.demo.crash")


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
    mode = env.get("PULSE_ASYNC_MODE") or "eventlet"
    if mode not in ASYNC_MODES:
        raise ConfigError(f"PULSE_ASYNC_MODE={mode!r} is invalid: use one of {', '.join(ASYNC_MODES)}")
    return {
        "PULSE_TOKEN": token,
        "VIEWER_TOKEN": viewer,
        # Derived from the token by default, so several servers agree and a new token logs
        # everyone out; host apps derive the same secret to mint per-task tokens.
        "SECRET_KEY": secret_from_env({"PULSE_TOKEN": token, **env}),
        "EMBED_ORIGINS": _read(env, "PULSE_EMBED_ORIGINS", _origins, ()),
        "ASYNC_MODE": mode,
        "HOST": env.get("HOST") or "127.0.0.1",
        "PORT": _read(env, "PORT", _port, 5000),
        "LAUNCH_ALLOW": _read(env, "PULSE_LAUNCH_ALLOW", _names, DEMO_TASKS),
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
        # Failed logins allowed per client address and minute (then 429 until the minute ends).
        "LOGIN_ATTEMPTS": _read(env, "PULSE_LOGIN_ATTEMPTS", _at_least(1), 10),
        # Reverse proxies in front of Pulse whose X-Forwarded-For/-Proto/-Host are believed; 0 believes
        # none, since anyone can send those headers (and pick their address or scheme with them).
        "PROXY_HOPS": _read(env, "PULSE_PROXY_HOPS", _whole, 0),
        # Always Secure; otherwise only on requests that came over HTTPS (pulse.security asks each one).
        "SESSION_COOKIE_SECURE": _read(env, "PULSE_SECURE_COOKIE", _flag, False),
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_NAME": "pulse_session",
    }
