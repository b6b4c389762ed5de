"""Ending the live feed of sockets whose per-task token expired or was revoked after they connected.

Every ``subscribe`` checks the token again, but a socket that stays subscribed would go on
getting pushes. Every few seconds the server disconnects those sockets (one MGET of the
revocation keys for all of them, so every server sees a revocation made on another). The
widget then asks the REST API, which answers 401 or 403 with the reason, and shows it.
"""

import time
from collections.abc import Callable

from pulse.agent.tokens import Grant
from pulse.record.registry import Registry
from pulse.server.http import grants
from pulse.server.upkeep.periodic import Periodic


class TokenLapses(Periodic):
    """The per-task grants of the connected sockets, and the disconnection of lapsed ones."""

    failure = "lapsed tokens not checked"

    def __init__(self, registry: Registry, disconnect: Callable[[str], None], interval: float = 5.0,
                 on_lapse: Callable[[], None] = lambda: None) -> None:
        self.registry = registry
        self.disconnect = disconnect
        self.interval = interval
        self.on_lapse = on_lapse
        self.grants: dict[str, Grant] = {}  # socket id -> the grant it connected with

    def watch(self, sid: str, grant: Grant) -> None:
        self.grants[sid] = grant

    def forget(self, sid: str) -> None:
        self.grants.pop(sid, None)

    def lapsed(self, now: float | None = None) -> list[str]:
        """The sockets whose grant has expired or been revoked by ``now``."""
        now = time.time() if now is None else now
        watched = list(self.grants.items())  # a copy: sockets come and go while Redis answers
        scopes = sorted({grant.scope for _sid, grant in watched})
        if not scopes:
            return []
        cutoffs = dict(zip(scopes, self.registry.client.mget([grants.revocation_key(self.registry, scope)
                                                               for scope in scopes]), strict=True))
        return [sid for sid, grant in watched
                if grant.expired(now) or grants.revoked(grant, cutoffs[grant.scope])]

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
