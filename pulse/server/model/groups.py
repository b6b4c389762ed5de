"""Groups, chords and chains as one unit: their members in order and one aggregate progress.

A group's members share a ``group_id`` (indexed at write time); a chord is a group whose
members carry the body to run after them; a chain is named by its first step, whose record
lists the steps after it. The aggregate weights each member by its own total where known, and
never goes down while the unit runs (members recorded late must not pull a bar backwards).
"""

from typing import Any

from pulse.record.registry import Registry, as_text
from pulse.record.statuses import ACTIVE, BROKEN, FAILED, FINISHED, RUNNING, SCHEDULED, WAITING, WORKING
from pulse.server.model.store import TaskStore

KINDS = ("group", "chord", "chain")


def member_ids(registry: Registry, unit_id: str) -> tuple[str, list[str], str | None]:
    """(kind, member ids in order, chord body id) for a group id or a chain's first step."""
    client, keys = registry.client, registry.keys
    members = [as_text(m) for m in client.zrange(keys.index("group", unit_id), 0, -1)]
    if members:
        body = client.get(keys.chord_body(unit_id))
        if body is not None:  # Celery runs a chord's body with the header's group id too
            members = [m for m in members if m != as_text(body)]
        indexes = [record.get("group_index") if record else None for record in registry.get_many(members)]
        # Publish order first (group_index), then the order they were recorded in.
        order = sorted(range(len(members)), key=lambda i: (indexes[i] is None, indexes[i] or 0, i))
        return ("chord" if body else "group"), [members[i] for i in order], as_text(body) if body else None
    first = registry.get(unit_id)
    if first is not None and first.get("chain"):
        return "chain", [unit_id, *first["chain"]], None
    return "", [], None


def _fraction(task: dict[str, Any]) -> float:
    if task["status"] == FINISHED:
        return 1.0
    progress = task.get("progress") or {}
    return (progress.get("percent") or 0.0) / 100.0


def aggregate(members: list[dict[str, Any]]) -> dict[str, Any]:
    """Percent of the whole, each member weighted by its total (the mean known total if unknown)."""
    totals = [m["progress"]["total"] for m in members if m.get("progress") and m["progress"].get("total")]
    default = sum(totals) / len(totals) if totals else 1.0
    weights = [(m.get("progress") or {}).get("total") or default for m in members]
    done = sum(w * _fraction(m) for w, m in zip(weights, members, strict=True))
    percent = round(100.0 * done / sum(weights), 1) if members else 0.0
    return {"percent": percent, "current": round(done, 3), "total": round(sum(weights), 3)}


def unit_status(members: list[dict[str, Any]]) -> str:
    statuses = {m["status"] for m in members}
    if statuses & WORKING:
        return RUNNING
    if statuses & WAITING:
        return RUNNING if statuses - WAITING else SCHEDULED
    if statuses & BROKEN:
        return FAILED
    return FINISHED


def describe_unit(store: TaskStore, unit_id: str, view=lambda data: data) -> dict[str, Any] | None:
    """The group, chord or chain JSON, or None when no such unit was recorded.

    ``view`` shapes each member (the full task JSON for operators, the public view for tokens).
    """
    kind, ids, body_id = member_ids(store.registry, unit_id)
    if not ids:
        return None
    members = store.many_json(ids)
    body = store.get_json(body_id) if body_id else None
    progress = aggregate(members + ([body] if body else []))
    status = unit_status(members + ([body] if body else []))
    key = store.registry.keys.unit_max(unit_id)
    if status in ACTIVE:
        # Keep the high-water mark: a member recorded late must not pull the bar backwards.
        best = float(store.registry.client.get(key) or 0.0)
        if progress["percent"] < best:
            progress["percent"] = best
        else:
            store.registry.client.set(key, progress["percent"], ex=int(store.registry.retention))
    return {"id": unit_id, "kind": kind, "status": status, "progress": progress,
            "members": [view(m) for m in members], "body": view(body) if body else None}


def units_of(data: dict[str, Any]) -> set[str]:
    """The groups, chords and chains a task belongs to, by the id each is known by."""
    units = {data.get("group_id"), data.get("chain_of"), data.get("chord_of")}
    if data.get("chain"):
        units.add(data["id"])  # a chain is named by its first step
    units.discard(None)
    return units
