"""Evaluating the alert rules and delivering their notices, by one server at a time.

Every server runs this job; the one holding the lease (``lua/lease.lua``, renewed each second)
evaluates the rules every ``evaluate_every`` seconds and delivers the notices that are due, each
attempt in a green thread of its own so a slow receiver holds up only itself. When that server
stops, its lease runs out and the next server to try takes over: states, queued notices and
retries are all in Redis.
"""

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from pulse.record.registry import Registry
from pulse.record.scripts import script
from pulse.server.alerts import webhooks
from pulse.server.alerts.conditions import Judgement, judge, step
from pulse.server.alerts.outbox import Outbox
from pulse.server.alerts.readings import Readings
from pulse.server.alerts.rules import Rules
from pulse.server.upkeep.periodic import Periodic

LEASE = 10  # seconds; renewed every step (1 s), so a takeover waits at most this long
IN_FLIGHT = 16  # deliveries attempted at once
log = logging.getLogger(__name__)


class Alerting(Periodic):
    """The lease holder's loop: evaluate, then deliver."""

    interval = 1.0
    failure = "alerting step failed"

    def __init__(self, registry: Registry, rules: Rules, outbox: Outbox,
                 readings: Callable[[float], Readings], owner: str, evaluate_every: float, timeout: float,
                 spawn: Callable[..., Any] | None = None,
                 on_delivery: Callable[[dict[str, Any]], None] = lambda entry: None) -> None:
        self.client = registry.client
        self.keys = registry.keys
        self.rules = rules
        self.outbox = outbox
        self.readings = readings
        self.owner = owner
        self.evaluate_every = evaluate_every
        self.timeout = timeout
        self.spawn = spawn
        self.on_delivery = on_delivery
        self._lease = self.client.register_script(script("lease.lua"))
        self._next_evaluation = 0.0
        self._in_flight = 0

    def leading(self) -> bool:
        """Take or keep the lease; whether this server is the one that alerts."""
        return bool(self._lease(keys=[self.keys.alert_lease], args=[self.owner, LEASE]))

    def step(self) -> None:
        if not self.leading():
            return
        now = time.time()
        if now >= self._next_evaluation:
            self._next_evaluation = now + self.evaluate_every
            self.evaluate(now)
        self.deliver(time.time())

    def evaluate(self, now: float) -> list[dict[str, Any]]:
        """Judge every rule and write the new states with the notices they call for, in one
        transaction; returns the notices."""
        rules = self.rules.all()
        previous = dict(zip([rule["id"] for rule in rules], self.rules.states([r["id"] for r in rules]),
                            strict=True))
        readings = self.readings(now)
        states, posted = {}, []
        pipe = self.client.pipeline()
        for rule in rules:
            judgement = None
            if rule["enabled"]:
                try:
                    judgement = judge(rule, readings)
                except Exception as exc:  # a reading that failed (broker down) leaves this rule unknown
                    said = f"cannot be read now: {type(exc).__name__}: {exc}"[:300]
                    judgement = Judgement(None, None, said)
            states[rule["id"]], notices = step(rule, judgement, previous[rule["id"]], now)
            for notice in notices:
                self.outbox.post(pipe, rule, notice)
                posted.append(notice)
        self.rules.save_states(pipe, states)
        pipe.execute()
        self.rules.drop_orphan_states()
        return posted

    def deliver(self, now: float) -> int:
        """Attempt the deliveries that are due (up to IN_FLIGHT at once); returns how many started."""
        room = IN_FLIGHT - self._in_flight
        claimed = self.outbox.claim(now, room) if room > 0 else []
        for delivery, data in claimed:
            self._in_flight += 1
            if self.spawn is None:
                self._attempt(delivery, data)
            else:
                self.spawn(self._attempt, delivery, data)
        return len(claimed)

    def _attempt(self, delivery: str, data: dict[str, Any]) -> None:
        try:
            payload = webhooks.body(json.loads(data["notice"]), data["format"])
            status, error, retry = webhooks.post(data["url"], payload, self.timeout)
            entry = self.outbox.settle(delivery, data, time.time(), status, error, retry)
            self.on_delivery(entry)
        except Exception as exc:  # Redis down while settling: the claim runs out and it is tried again
            log.warning("pulse: alert delivery %s failed: %r", delivery, exc)
        finally:
            self._in_flight -= 1
