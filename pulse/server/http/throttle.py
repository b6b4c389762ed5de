"""Credential throttling: at most N failed credential checks a minute per client address, in Redis.

Every check of a credential counts: the login form, bearer tokens on the API and ``/metrics``,
per-task tokens, the Socket.IO auth payload. The credential is compared first (in constant time,
in this process), then one script, atomic in Redis, reads the address's failures in this minute,
refuses when they reached the limit, and counts this check if it failed. So a burst of parallel
guesses gets at most N answers, and a right guess past the limit is refused like a wrong one.
Counted in Redis (not in the process) so that every server process and a restart agree.
"""

import time

import redis

from pulse.record.keys import Keys

# KEYS[1] the address's failures this minute; ARGV: limit, "1" if this check failed, key TTL.
COUNT = """
local failures = tonumber(redis.call('GET', KEYS[1]) or '0')
if failures >= tonumber(ARGV[1]) then return -1 end
if ARGV[2] == '1' then
  failures = redis.call('INCR', KEYS[1])
  if failures == 1 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
end
return failures
"""


class Throttled(Exception):
    """This address used up its failed credential checks for the minute."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed credential checks from your address: try again in {retry_after} s")
        self.retry_after = retry_after


class AuthThrottle:
    """Fixed one-minute windows of failed credential checks per client address."""

    def __init__(self, client: redis.Redis, keys: Keys, limit: int) -> None:
        self.keys = keys
        self.limit = limit
        self._count = client.register_script(COUNT)

    def check(self, address: str, failed: bool, now: float | None = None) -> None:
        """Count one credential check from ``address``; raises Throttled when over the limit
        (whether or not this one failed: the answer must not tell a right guess apart)."""
        now = time.time() if now is None else now
        key = self.keys.auth_failures(address, int(now // 60))
        if self._count(keys=[key], args=[self.limit, "1" if failed else "0", 120]) == -1:
            raise Throttled(60 - int(now % 60))
