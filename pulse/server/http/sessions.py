"""Login sessions, recorded in Redis so that they can be ended on every server.

The cookie carries a session id, signed with a key only the servers hold; the record under that
id holds the role and a fingerprint of the credential the session was made from. A session is
good while its record exists (logout deletes it, and it expires after PULSE_SESSION_LIFETIME)
and its fingerprint matches the current credential of its role: a new PULSE_TOKEN or
PULSE_VIEWER_TOKEN ends the sessions made with the old one, on every server that has the new one.
"""

import hashlib
import hmac
import json
import secrets

import redis

from pulse.record.keys import Keys


def fingerprint(session_key: str, credential: str) -> str:
    """A one-way mark of ``credential``, keyed so that it tells nothing about the credential."""
    return hmac.new(session_key.encode(), credential.encode(), hashlib.sha256).hexdigest()[:32]


class Sessions:
    """Open, check and end login sessions."""

    def __init__(self, client: redis.Redis, keys: Keys, lifetime: float) -> None:
        self.client = client
        self.keys = keys
        self.lifetime = int(lifetime)

    def open(self, role: str, mark: str) -> str:
        """A new session for ``role``, made from the credential whose fingerprint is ``mark``."""
        session_id = secrets.token_urlsafe(24)
        self.client.set(self.keys.session(session_id), json.dumps({"role": role, "fp": mark}),
                        ex=self.lifetime)
        return session_id

    def role(self, session_id: str, marks: dict[str, str]) -> str | None:
        """The session's role while it is good: its record exists and its credential is still
        the current one of its role (``marks``: role -> fingerprint of its current credential)."""
        raw = self.client.get(self.keys.session(session_id))
        if raw is None:
            return None
        record = json.loads(raw)
        role = record.get("role")
        current = marks.get(role)
        return role if current is not None and hmac.compare_digest(current, record.get("fp", "")) else None

    def end(self, session_id: str) -> None:
        self.client.delete(self.keys.session(session_id))

    def key(self, session_id: str) -> str:
        return self.keys.session(session_id)
