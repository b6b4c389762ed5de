"""Per-task tokens: signed, expiring grants to read one task (or one group) and nothing else.

A host application mints one when it launches a task for its user and hands it to the page
that shows the widget; it needs only the grant key (``PULSE_GRANT_KEY``), not the server, and
that key signs grants and nothing else (sessions are signed with a key only the servers hold):

    from pulse import grant_key_from_env, mint_token
    token = mint_token(grant_key_from_env(os.environ), task_id=result.id, ttl=3600)

Signed with itsdangerous; the Pulse server checks the signature, the expiry and revocation, and
bounds what the host wrote: an issue time ahead of its own clock is refused, a lifetime capped.
"""

import math
import time
import uuid
from dataclasses import dataclass, replace

from itsdangerous import BadSignature, URLSafeSerializer

SALT = "pulse-task-token"
MAX_TTL = 7 * 86400


class TokenError(Exception):
    """A token that grants nothing; ``status`` is 401 (bad or expired) or 403 (revoked, out of scope)."""

    def __init__(self, status: int, message: str, forged: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.forged = forged  # not signed with the grant key: a guess, which the server counts


@dataclass(frozen=True)
class Grant:
    """What a valid token allows: one task or one group, read-only unless ``cancel``."""

    task_id: str | None
    group_id: str | None
    cancel: bool
    issued_at: float
    expires_at: float
    token_id: str

    @property
    def scope(self) -> str:
        return self.task_id or self.group_id or ""

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at


def mint_token(secret: str, task_id: str | None = None, group_id: str | None = None, ttl: float = 3600,
               cancel: bool = False, now: float | None = None) -> tuple[str, float]:
    """A token for ``task_id`` or ``group_id`` valid ``ttl`` seconds; returns (token, expires_at)."""
    if (task_id is None) == (group_id is None):
        raise ValueError("mint a token for exactly one of task_id or group_id")
    if not 0 < ttl <= MAX_TTL:
        raise ValueError(f"ttl must be between 1 second and {MAX_TTL} seconds (7 days)")
    issued = time.time() if now is None else now
    payload = {"iat": issued, "exp": issued + ttl, "c": bool(cancel), "jti": uuid.uuid4().hex}
    payload["t" if task_id is not None else "g"] = task_id if task_id is not None else group_id
    return URLSafeSerializer(secret, salt=SALT).dumps(payload), payload["exp"]


def read_token(secret: str, token: str, now: float | None = None, skew: float | None = None,
               max_ttl: float = MAX_TTL) -> Grant:
    """The grant a token carries; raises TokenError for a tampered, malformed or expired one.

    ``skew`` (the server's) refuses an issue time more than that ahead of ``now``, and the
    grant ends ``max_ttl`` after its issue time whatever expiry it names.
    """
    try:
        payload = URLSafeSerializer(secret, salt=SALT).loads(token)
        grant = Grant(task_id=payload.get("t"), group_id=payload.get("g"), cancel=bool(payload["c"]),
                      issued_at=float(payload["iat"]), expires_at=float(payload["exp"]),
                      token_id=str(payload["jti"]))
        if not (math.isfinite(grant.issued_at) and math.isfinite(grant.expires_at)):
            raise ValueError("times must be finite")
    except (BadSignature, KeyError, TypeError, ValueError, AttributeError):
        raise TokenError(401, "invalid token: not signed by this Pulse server, or damaged",
                         forged=True) from None
    now = time.time() if now is None else now
    if skew is not None and grant.issued_at > now + skew:
        raise TokenError(401, f"token issued {grant.issued_at - now:.0f} s in the future: the clock of "
                              "the application that minted it is ahead of the Pulse server's")
    if grant.expires_at > grant.issued_at + max_ttl:  # so that a socket holding it lapses then too
        grant = replace(grant, expires_at=grant.issued_at + max_ttl)
    if grant.expired(now):
        raise TokenError(401, "token expired: ask the application for a new one")
    return grant
