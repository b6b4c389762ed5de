"""Changes that no Celery event carries, told to every web server.

Operator actions, lost detection and the expiry sweep change records in the registry. The server
that made a change pushes it to its own clients and sends a ``pulse-changed`` event naming the
task; every other server's monitor reads the record and pushes it to theirs. The notice travels
on Celery's event channel, so it works on any broker and arrives in order with the workers'
events; Celery's own consumers ignore the ``pulse`` group (``State`` handles worker and task
events only).
"""

import logging
import os
import secrets
import socket
from typing import Any

from celery import Celery

from pulse.server.model.taskjson import valid_id

log = logging.getLogger(__name__)

NOTICE = "pulse-changed"
PER_NOTICE = 100  # task ids in one notice event (a bulk action's batch is 50 and their replays)


class Notices:
    """Sends this server's notices and recognises the other servers'."""

    def __init__(self, celery_app: Celery, prefix: str, origin: str | None = None) -> None:
        self.celery = celery_app
        self.prefix = prefix  # several Pulse installs may share a broker: each hears its own
        # Unique per process: a server restarted on the same host and port is another origin.
        self.origin = origin or f"pulse@{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"

    def publish(self, task_ids: list[str]) -> None:
        """Tell the other servers that these tasks changed, up to PER_NOTICE in one event; a
        broker error is logged, not raised (the change is in the registry: their pages still
        read it at their next resync)."""
        try:
            with self.celery.events.default_dispatcher(hostname=self.origin) as dispatcher:
                for start in range(0, len(task_ids), PER_NOTICE):
                    chunk = task_ids[start:start + PER_NOTICE]
                    # ``uuid`` too: the first id, for a server of a version that reads one only.
                    dispatcher.send(NOTICE, uuid=chunk[0], uuids=chunk, registry=self.prefix)
        except Exception as exc:
            log.warning("pulse: %d changed tasks not announced to the other servers: %r", len(task_ids), exc)

    def from_others(self, event: dict[str, Any]) -> bool:
        """Whether ``event`` is another server's notice about tasks of this registry."""
        uuids = event.get("uuids", [event.get("uuid")])
        return (event.get("type") == NOTICE and event.get("hostname") != self.origin
                and event.get("registry") == self.prefix and valid_id(event.get("uuid"))
                and isinstance(uuids, list) and 0 < len(uuids) <= PER_NOTICE and all(map(valid_id, uuids)))


def changed(notice: dict[str, Any]) -> list[dict[str, Any]]:
    """A notice (``from_others``) as one event per task it names, as the monitor takes them."""
    return [{**notice, "uuid": task_id} for task_id in notice.get("uuids", [notice["uuid"]])]
