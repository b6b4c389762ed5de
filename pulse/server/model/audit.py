"""The audit log: every operator action, who did it, what and when, kept in Redis."""

import json
import time
from typing import Any

import redis

from pulse.record.keys import Keys

KEEP = 10_000


class AuditLog:
    """Appends actions to a capped Redis list and reads them back newest first."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.key = keys.audit

    def append(self, who: str, action: str, task_id: str | None = None, **detail: Any) -> dict[str, Any]:
        entry = {"at": time.time(), "who": who, "action": action, "task": task_id, "detail": detail}
        pipe = self.client.pipeline()
        pipe.lpush(self.key, json.dumps(entry, default=str))
        pipe.ltrim(self.key, 0, KEEP - 1)
        pipe.execute()
        return entry

    def read(self, limit: int = 100) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self.client.lrange(self.key, 0, limit - 1)]
