"""Per-task tokens on the server side: is this token good, and does it cover this task?

Good means: signed with the grant key, issued no later than the server's clock allows, not
expired (nor older than the server's cap on a grant's life), not revoked (the operator can
revoke every token of a task or group issued so far). It covers the task it names, and the tasks that
replayed it, so a widget can follow a replay with the token it has.
"""

import time
from functools import wraps
from typing import Any

from flask import current_app, g, request

from pulse.agent.tokens import MAX_TTL, Grant, TokenError, read_token
from pulse.record.registry import Registry
from pulse.server.http import auth

REPLAY_HOPS = 10


def check(token: str, counted: bool = True) -> Grant:
    """The grant of a per-task token; raises TokenError (401 bad or expired, 403 revoked), and
    Throttled when ``counted`` and this address made too many failed checks (a forged token is one)."""
    config = current_app.config
    try:
        grant = read_token(config["GRANT_KEY"], token, skew=config["GRANT_SKEW"],
                           max_ttl=config["GRANT_MAX_TTL"])
    except TokenError as exc:
        if counted:
            auth.count_check(failed=exc.forged)
        raise
    if counted:
        auth.count_check(failed=False)
    registry = current_app.extensions["pulse_registry"]
    if revoked(grant, registry.client.get(revocation_key(registry, grant.scope))):
        raise TokenError(403, "token revoked: ask the application for a new one")
    return grant


def revocation_key(registry: Registry, scope: str) -> str:
    """The key holding the time before which every token of a task or group is revoked."""
    return registry.keys.token_revocation(scope)


def revoked(grant: Grant, cutoff: bytes | str | None) -> bool:
    """Whether ``grant`` was issued at or before its scope's revocation ``cutoff`` (if any)."""
    return cutoff is not None and grant.issued_at <= float(cutoff)


def revoke_all(registry: Registry, scope: str, skew: float, max_ttl: float = MAX_TTL) -> float:
    """Revoke every token issued so far for a task or group; returns the cut-off time.

    The host's clock may run up to ``skew`` ahead of ours (a token from further ahead is refused),
    so the cut-off is that far in the future: a token minted before now carries an issue time
    before it on any clock we accept. Tokens minted in the next ``skew`` seconds are revoked too.
    """
    cutoff = time.time() + skew
    registry.client.set(revocation_key(registry, scope), cutoff, ex=int(max_ttl + skew) + 1)
    return cutoff


def covers_task(registry: Registry, grant: Grant, task_id: str) -> bool:
    """The token names this task, or this task is a replay (of a replay...) of the one it names."""
    if grant.task_id is None:
        return False
    current = task_id
    for _ in range(REPLAY_HOPS):
        if current == grant.task_id:
            return True
        record = registry.get(current)
        current = record.get("replay_of") if record else None
        if current is None:
            return False
    return False


def reader_or_grant(view):
    """Let through a reader (operator/viewer, as ``api_access``) or a per-task token, given as
    ``Authorization: Bearer`` or ``?token=``; the view finds the token's grant in ``g.grant``."""
    guarded = auth.api_access(view)

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        bearer, query = auth.bearer_token(), request.args.get("token")
        token = bearer if bearer is not None else query
        g.grant = None
        # The operator and viewer tokens are only taken from the header, never from a URL.
        if token is None or (bearer is not None and auth.role_for_token(bearer) is not None):
            return guarded(*args, **kwargs)  # which counts the bearer token's check
        try:
            g.grant = check(token)
        except TokenError as exc:
            return {"error": str(exc)}, exc.status
        return view(*args, **kwargs)

    return wrapped
