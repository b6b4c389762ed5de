"""Failed-login throttling: at most N failed attempts a minute per client address, in Redis.

Counted in Redis (not in the process) so that every server process and a restart agree. A
client over the limit is refused before its token is even compared.
"""

import time

import redis

from pulse.record.keys import Keys


class LoginThrottle:
    """Fixed one-minute windows of failed attempts per client address."""

    def __init__(self, client: redis.Redis, keys: Keys, limit: int) -> None:
        self.client = client
        self.keys = keys
        self.limit = limit

    def _key(self, address: str, now: float) -> str:
        return self.keys.login_failures(address, int(now // 60))

    def retry_after(self, address: str, now: float | None = None) -> int | None:
        """Seconds until ``address`` may try again, or None when it may try now."""
        now = time.time() if now is None else now
        failures = int(self.client.get(self._key(address, now)) or 0)
        return None if failures < self.limit else 60 - int(now % 60)

    def failed(self, address: str, now: float | None = None) -> None:
        key = self._key(address, time.time() if now is None else now)
        pipe = self.client.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, 120)
        pipe.execute()
