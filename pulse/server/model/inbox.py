"""The failure inbox: unresolved failures (failed or lost) grouped by task name and exception type.

The groups are kept at write time (``lua/write.lua``: one index per group, ``i:failgroup:``, and
the set of groups), so reading the inbox costs a few commands per group, not a pass over the
failed tasks. A group's id is opaque (its name and exception type, encoded) and is also a list
filter (``failure_group``), so a whole group can be listed, exported or acted on in bulk.
"""

import base64
import binascii
import json
from typing import Any

from pulse.record.registry import Registry, as_text

SEPARATOR = "\x1f"
SAMPLE = 5
MAX_GROUPS = 500  # shown, the largest first; more is counted


class GroupIdError(ValueError):
    """A failure group id that is not one."""


def group_id(name: str, exc_type: str) -> str:
    return base64.urlsafe_b64encode(f"{name}{SEPARATOR}{exc_type}".encode()).decode().rstrip("=")


def group_member(group: str) -> str:
    """The group's member of the set ``failgroups`` (name and exception type), from its id."""
    try:
        raw = base64.urlsafe_b64decode(group + "=" * (-len(group) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise GroupIdError("malformed failure_group: pass a group id from GET /api/failures") from None
    if SEPARATOR not in raw:
        raise GroupIdError("malformed failure_group: pass a group id from GET /api/failures")
    return raw


def failure_groups(registry: Registry, sample: int = SAMPLE) -> dict[str, Any]:
    """``{"groups": [...], "total_groups", "total_failures"}``, the largest groups first: each with
    its name, exception type, count, first and last seen (when its oldest and newest tasks ended),
    and a sample of its newest tasks (id, status, message)."""
    client, keys = registry.client, registry.keys
    members = sorted(as_text(m) for m in client.smembers(keys.failure_groups))
    pipe = client.pipeline(transaction=False)
    for member in members:
        index = keys.index("failgroup", member)
        pipe.zcard(index)
        pipe.zrange(index, 0, 0)
        pipe.zrevrange(index, 0, sample - 1)
    replies = pipe.execute()
    groups = []
    for number, member in enumerate(members):
        count, oldest, newest = replies[3 * number: 3 * number + 3]
        if count:
            groups.append((member, count, as_text(oldest[0]), [as_text(i) for i in newest]))
    groups.sort(key=lambda group: (-group[1], group[0]))
    shown = groups[:MAX_GROUPS]
    pipe = client.pipeline(transaction=False)
    for _member, _count, oldest, newest in shown:
        for task_id in (oldest, *newest):
            pipe.hmget(keys.task(task_id), "status", "failure", "lost_reason", "finished_at", "updated_at")
    reads = iter(pipe.execute())
    out = []
    for member, count, oldest, newest in shown:
        first = _sample(oldest, next(reads))
        tasks = [_sample(task_id, next(reads)) for task_id in newest]
        name, _sep, exc_type = member.partition(SEPARATOR)
        out.append({
            "id": group_id(name, exc_type), "name": name, "exc_type": exc_type or None, "count": count,
            "first_seen": first["at"], "last_seen": max((t["at"] for t in tasks if t["at"]), default=None),
            "sample": tasks,
        })
    return {"groups": out, "total_groups": len(groups), "total_failures": sum(g[1] for g in groups)}


def _sample(task_id: str, fields: list[Any]) -> dict[str, Any]:
    status, failure, lost_reason, finished_at, updated_at = (as_text(f) if f is not None else None
                                                              for f in fields)
    message = _loaded(failure)
    message = message.get("exc_message") if isinstance(message, dict) else _loaded(lost_reason)
    at = _loaded(finished_at or updated_at)
    return {"id": task_id, "status": status, "message": message if isinstance(message, str) else None,
            "at": float(at) if isinstance(at, int | float) and not isinstance(at, bool) else None}


def _loaded(raw: str | None) -> Any:
    """A record field's JSON value; None for none, or for one that is not JSON (never a 500)."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None
