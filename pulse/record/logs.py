"""A task's log lines in Redis: the newest ``KEEP``, numbered, with counts of what was lost.

Written by the workers' log handler (``pulse.agent.logs``) a batch at a time through one script
(``lua/logs.lua``), read by the API after a line number, so a page that loads the backlog and
then takes the pushes has neither a gap nor a duplicate. Deleted with the task's record.
"""

import json
from functools import cached_property
from typing import Any

from .registry import Registry, as_text
from .scripts import script

KEEP = 1000          # lines kept per task; the oldest go first, counted as dropped
LINE_LIMIT = 2048    # characters of a line's message; longer ones are cut, and say so
READ_LIMIT = 1000
# Built once: ``json.dumps`` with options builds an encoder per call, a third of a batch's encoding.
_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode


class TaskLogs:
    """Appends and reads the log lines of tasks in ``registry``'s Redis."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    @cached_property
    def _append(self) -> Any:
        return self.registry.client.register_script(script("logs.lua"))

    def append(self, task_id: str, lines: list[dict[str, Any]], dropped: int = 0, lost: int = 0,
               client: Any = None, publish: tuple[int, str, bytes] | None = None) -> int:
        """Store ``lines`` (JSON-able dicts) after the task's others; the first one's number.
        ``dropped``, ``lost``: lines the writer let go (see ``lua/logs.lua``). ``publish``:
        (first, channel, message), a message announcing the lines as numbered from ``first``,
        published in the same call if the first line does get that number."""
        keys = self.registry.keys
        texts = [_encode(line) for line in lines]
        announce = publish if publish is not None and lines else (0, "", b"")
        args = [KEEP, dropped, lost, int(self.registry.retention), *announce, *texts]
        names = [keys.logs(task_id), keys.log_counts(task_id)]
        return int(self._append(keys=names, args=args, client=client))

    def read(self, task_id: str, after: int = 0, limit: int = READ_LIMIT) -> dict[str, Any]:
        """The lines numbered above ``after`` (at most ``limit``), oldest first, and the counts:
        ``{"lines": [{"seq", ...}], "last": the newest line's number, "dropped", "lost"}``."""
        keys = self.registry.keys
        client = self.registry.client
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(keys.log_counts(task_id))
        pipe.lindex(keys.logs(task_id), 0)
        counts, first = pipe.execute()
        counts = {as_text(k): int(v) for k, v in counts.items()}
        oldest = int(as_text(first).split(" ", 1)[0]) if first is not None else counts.get("seq", 0) + 1
        start = max(0, after + 1 - oldest)
        raw = client.lrange(keys.logs(task_id), start, start + limit - 1) if first is not None else []
        lines = []
        for item in raw:
            seq, _, text = as_text(item).partition(" ")
            lines.append({"seq": int(seq), **json.loads(text)})
        return {"lines": lines, "last": counts.get("seq", 0), "dropped": counts.get("dropped", 0),
                "lost": counts.get("lost", 0)}
