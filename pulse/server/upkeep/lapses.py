"""Ending the live feed of sockets whose credential lapsed after they connected.

A per-task token expires or is revoked; a login session ends (logout, expiry, a new token).
Every ``subscribe`` checks the token again, but a socket that stays subscribed would go on
getting pushes. Every few seconds the server disconnects those sockets (one MGET of the
revocation keys and session records for all of them, so every server sees a revocation or a
logout made on another). The widget then asks the REST API, which answers 401 or 403 with the
reason, and shows it; a dashboard's reconnection is refused and its page sends it to log in.
"""

import time
from collections.abc import Callable

from pulse.agent.tokens import Grant
from pulse.record.registry import Registry
from pulse.server.http import grants
from pulse.server.upkeep.periodic import Periodic


class Lapses(Periodic):
    """The per-task grants and sessions of the connected sockets, and the disconnection of lapsed ones."""

    failure = "lapsed credentials not checked"

    def __init__(self, registry: Registry, disconnect: Callable[[str], None], interval: float = 5.0,
                 on_lapse: Callable[[], None] = lambda: None) -> None:
        self.registry = registry
        self.disconnect = disconnect
        self.interval = interval
        self.on_lapse = on_lapse
        self.grants: dict[str, Grant] = {}  # socket id -> the grant it connected with
        self.sessions: dict[str, str] = {}  # socket id -> the key of the session it connected with

    def watch(self, sid: str, grant: Grant) -> None:
        self.grants[sid] = grant

    def watch_session(self, sid: str, key: str) -> None:
        self.sessions[sid] = key

    def forget(self, sid: str) -> None:
        self.grants.pop(sid, None)
        self.sessions.pop(sid, None)

    def lapsed(self, now: float | None = None) -> list[str]:
        """The sockets whose grant has expired or been revoked by ``now``."""
        now = time.time() if now is None else now
        watched = list(self.grants.items())  # copies: sockets come and go while Redis answers
        sessions = list(self.sessions.items())
        scopes = sorted({grant.scope for _sid, grant in watched})
        keys = [grants.revocation_key(self.registry, scope) for scope in scopes]
        keys += [key for _sid, key in sessions]
        if not keys:
            return []
        values = self.registry.client.mget(keys)
        cutoffs = dict(zip(scopes, values[:len(scopes)], strict=True))
        lapsed = [sid for sid, grant in watched
                  if grant.expired(now) or grants.revoked(grant, cutoffs[grant.scope])]
        return lapsed + [sid for (sid, _key), record in zip(sessions, values[len(scopes):], strict=True)
                         if record is None]

    def sweep(self) -> int:
        """Disconnect every lapsed socket; returns how many."""
        gone = self.lapsed()
        for sid in gone:
            self.forget(sid)
            self.disconnect(sid)
            self.on_lapse()
        return len(gone)

    def step(self) -> int:
        return self.sweep()
