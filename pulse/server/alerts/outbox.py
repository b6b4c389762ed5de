"""The notices waiting for delivery, their retries, and each rule's history, in Redis.

A notice goes to each of its rule's webhooks as a delivery of its own (``<notice id>#<n>``), so a
receiver that is down delays only itself. A delivery is claimed before it is attempted
(``lua/claim_notices.lua``): a second server never attempts it at the same time, and one whose
deliverer died is due again when the claim runs out. Delivery is at least once: a receiver that
took a notice but answered too late gets it again, with the same ``id`` to drop it by.
"""

import json
from typing import Any
from urllib.parse import urlsplit

from pulse.record.registry import Registry, as_text
from pulse.record.scripts import script

CLAIM = 60  # seconds a claimed delivery is left alone: longer than any attempt takes
BACKOFF_FIRST, BACKOFF_MOST = 1.0, 300.0  # seconds before the 2nd attempt, and the longest wait
ATTEMPTS = 12  # about 20 minutes of retries, then the delivery is given up (and the history says so)
HISTORY_KEEP = 200
KEEP_NOTICE = 7 * 86_400  # a delivery's hash outlives any retry schedule


def backoff(attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: 1, 2, 4, ... up to 300."""
    return min(BACKOFF_FIRST * 2 ** (attempts - 1), BACKOFF_MOST)


def shown_url(url: str) -> str:
    """A webhook as the history shows it: scheme and host (the path is often the secret)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}/…"


class Outbox:
    """Queue, claim and settle deliveries; record what happened in the rule's history."""

    def __init__(self, registry: Registry) -> None:
        self.client = registry.client
        self.keys = registry.keys
        self._claim = self.client.register_script(script("claim_notices.lua"))

    def post(self, pipe: Any, rule: dict[str, Any], notice: dict[str, Any]) -> None:
        """Queue ``notice`` for each of ``rule``'s webhooks, and note it in the rule's history, on
        ``pipe``: the evaluator writes the rule's new state in the same transaction, so a server
        that dies in between neither loses a notice nor queues it twice."""
        for index, hook in enumerate(rule["webhooks"]):
            delivery = f"{notice['id']}#{index}"
            pipe.hset(self.keys.alert_notice(delivery), mapping={
                "rule": rule["id"], "url": hook["url"], "format": hook["format"],
                "notice": json.dumps(notice), "attempts": 0})
            pipe.expire(self.keys.alert_notice(delivery), KEEP_NOTICE)
            pipe.zadd(self.keys.alert_outbox, {delivery: notice["at"]}, nx=True)
        self._history(pipe, rule["id"], {
            "at": notice["at"], "event": notice["status"], "notice": notice["id"], "detail": notice["detail"],
            "value": notice["value"], "webhooks": len(rule["webhooks"])})

    def claim(self, now: float, limit: int) -> list[tuple[str, dict[str, Any]]]:
        """Deliveries due now, claimed for this caller: (id, its hash)."""
        ids = [as_text(i) for i in self._claim(keys=[self.keys.alert_outbox], args=[now, limit, CLAIM])]
        if not ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for delivery in ids:
            pipe.hgetall(self.keys.alert_notice(delivery))
        out = []
        for delivery, raw in zip(ids, pipe.execute(), strict=True):
            data = {as_text(k): as_text(v) for k, v in raw.items()}
            if not data:  # its hash expired: nothing left to deliver
                self.client.zrem(self.keys.alert_outbox, delivery)
                continue
            out.append((delivery, data))
        return out

    def settle(self, delivery: str, data: dict[str, Any], now: float, status: int | None,
               error: str | None, retry: bool) -> dict[str, Any]:
        """Record an attempt: delivered (no error), retried later with backoff, or given up. Returns
        the history entry."""
        attempts = int(data.get("attempts", 0)) + 1
        notice = json.loads(data["notice"])
        entry: dict[str, Any] = {
            "at": now, "event": "delivery", "notice": notice["id"], "status": notice["status"],
            "url": shown_url(data["url"]), "format": data["format"], "attempt": attempts,
            "http_status": status, "error": error}
        pipe = self.client.pipeline()
        if error is None:
            entry["outcome"] = "delivered"
        elif retry and attempts < ATTEMPTS:
            entry["outcome"] = "will retry"
            entry["next_attempt_at"] = now + backoff(attempts)
            pipe.hset(self.keys.alert_notice(delivery), "attempts", attempts)
            pipe.zadd(self.keys.alert_outbox, {delivery: entry["next_attempt_at"]}, xx=True)
        else:
            entry["outcome"] = "gave up"
        if entry["outcome"] != "will retry":
            pipe.zrem(self.keys.alert_outbox, delivery)
            pipe.delete(self.keys.alert_notice(delivery))
        if self.client.hexists(self.keys.alert_rules, data["rule"]):  # not for a rule deleted since
            self._history(pipe, data["rule"], entry)
        pipe.execute()
        return entry

    def pending(self) -> int:
        return int(self.client.zcard(self.keys.alert_outbox))

    def history(self, rule_id: str, limit: int = HISTORY_KEEP) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self.client.lrange(self.keys.alert_history(rule_id), 0, limit - 1)]

    def forget(self, rule_id: str) -> None:
        """A deleted rule's history goes with it; its notices already queued are still delivered."""
        self.client.delete(self.keys.alert_history(rule_id))

    def _history(self, pipe: Any, rule_id: str, entry: dict[str, Any]) -> None:
        pipe.lpush(self.keys.alert_history(rule_id), json.dumps(entry))
        pipe.ltrim(self.keys.alert_history(rule_id), 0, HISTORY_KEEP - 1)
