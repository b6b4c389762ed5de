"""Every Pulse setting, read from the environment in this one place, for both sides.

``agent_settings`` is what producers and workers need (``pulse.install``), ``load_config`` what
the web server needs, and ``async_mode`` the one setting ``app.py`` reads before anything else
is imported. Only the standard library is imported here, so ``app.py`` can read the async mode
before eventlet patches it. Errors name the key, the bad value and how to fix it.
"""

import hashlib
import hmac
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
    mode = async_mode(env)
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


def async_mode(env: Mapping[str, str] = os.environ) -> str:
    """PULSE_ASYNC_MODE: ``eventlet`` (default, also when set but empty) or ``threading``."""
    mode = (env.get("PULSE_ASYNC_MODE") or "").strip() or "eventlet"
    if mode not in ASYNC_MODES:
        raise ConfigError(f"PULSE_ASYNC_MODE={mode!r} is invalid: use one of {', '.join(ASYNC_MODES)}")
    return mode


def secret_from_env(env: Mapping[str, str]) -> str:
    """The server's signing secret: PULSE_SECRET_KEY, else derived from PULSE_TOKEN (as the server does)."""
    if env.get("PULSE_SECRET_KEY"):
        return env["PULSE_SECRET_KEY"]
    token = env.get("PULSE_TOKEN") or ""
    if not token:
        raise ConfigError("set PULSE_SECRET_KEY or PULSE_TOKEN to the Pulse server's value to mint tokens")
    return hmac.new(token.encode(), b"pulse-session-key", hashlib.sha256).hexdigest()


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
    )
