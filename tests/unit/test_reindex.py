"""Records written before the issue-15 indexes existed get them, once, without looking fresher."""

from pulse.record.failures import failure_json
from pulse.server.model.inbox import failure_groups
from pulse.server.model.listing import Listing
from pulse.server.upkeep.reindex import VERSION, Reindex


def as_before_the_indexes(registry) -> None:
    """Strip what the new write script adds, as a registry written by the previous version has."""
    client, keys = registry.client, registry.keys
    for key in client.scan_iter(match=f"{keys.prefix}*"):
        text = key.decode()
        if any(part in text for part in ("i:term:", "i:failgroup:", "i:queue:", "i:exc_type:")) or \
                text in (keys.failure_groups, keys.id_chars) or text.startswith(keys.terms("")):
            client.delete(key)
        elif text.startswith(keys.task("")):
            client.hdel(key, "exc_type", "indexed")


def buckets(registry) -> dict:
    client = registry.client
    return {key: client.hgetall(key) for key in client.scan_iter(match=f"{registry.prefix}tp:*")}


def test_older_records_are_indexed_once_and_nothing_else_changes(registry):
    for number in range(1200):  # more than two batches, with ties on one score
        task_id = f"old-{number:04d}"
        now = 1000.0 + number // 3
        if number % 2:
            registry.write(task_id, "failed", fields={
                "name": "shop.charge", "queue": "payments", "kwargs": repr({"order_id": number}),
                "failure": failure_json("TimeoutError", "gateway slow", None, {"gateway": "gw-1"})}, now=now)
        else:
            registry.write(task_id, "lost", fields={"name": "shop.ship", "queue": "parcels"}, now=now)
    as_before_the_indexes(registry)
    listing = Listing(registry)
    assert listing.page({"q": "kwargs:order_id=7"}, 10).ids == []
    assert failure_groups(registry)["groups"] == []
    updated = dict(registry.client.zrange(registry.keys.updated, 0, -1, withscores=True))
    throughput = buckets(registry)

    reindex = Reindex(registry, "server-a")
    steps = 0
    while not reindex._stopping:
        reindex.step()
        steps += 1
    assert steps == 7  # six batches of 200, then the mark
    assert registry.client.get(reindex.done_key).decode() == VERSION

    assert listing.page({"q": "kwargs:order_id=7"}, 10).ids == ["old-0007"]
    assert len(listing.page({"queue": "parcels"}, 500).ids) == 500
    assert len(listing.page({"exc_type": "TimeoutError", "q": "detail:gateway=gw-1"}, 500).ids) == 500
    groups = {(g["name"], g["exc_type"]): g["count"] for g in failure_groups(registry)["groups"]}
    assert groups == {("shop.charge", "TimeoutError"): 600, ("shop.ship", None): 600}
    assert registry.client.sismember(registry.keys.id_chars, "o")
    assert dict(registry.client.zrange(registry.keys.updated, 0, -1, withscores=True)) == updated
    assert buckets(registry) == throughput

    again = Reindex(registry, "server-b")
    assert again.step() == 0 and again._stopping  # done for good, on every server


def test_one_server_at_a_time(registry):
    registry.write("t1", "finished", fields={"name": "x"}, now=1.0)
    as_before_the_indexes(registry)
    first, second = Reindex(registry, "a"), Reindex(registry, "b")
    assert first.step() == 1
    assert second.step() == 0 and not second._stopping  # the lease is a's


def test_the_walk_ends_at_the_first_record_this_version_made(registry):
    for number in range(300):
        fields = {"kwargs": repr({"n": number})}
        registry.write(f"old-{number:03d}", "finished", fields=fields, now=float(number))
    as_before_the_indexes(registry)
    for number in range(5000):  # made by this version: marked, never walked
        registry.write(f"new-{number:04d}", "finished", now=1000.0 + number)
    reindex = Reindex(registry, "a")
    assert reindex.step() == 200
    assert reindex.step() == 200 and reindex._stopping  # 100 old ones, then a new one: done
    assert Listing(registry).page({"q": "kwargs:n=299"}, 10).ids == ["old-299"]
