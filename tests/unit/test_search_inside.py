"""Search inside tasks: the terms a record is found by, the search syntax, and the listing over them."""

import pytest

from pulse.record.failures import failure_json
from pulse.record.terms import MAX_TERMS, RECORD_TERMS, SEPARATOR, SearchError, parse, record_terms
from pulse.server.model.listing import Listing, ListingError


@pytest.fixture
def listing(registry):
    return Listing(registry)


def walk(listing, q, limit=50, **filters):
    ids, cursor = [], None
    while True:
        page = listing.page({"q": q, **filters}, limit, cursor)
        ids += page.ids
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor


def test_terms_of_arguments_result_and_failure():
    terms = record_terms({
        "args": "(42, 'Hello World')", "kwargs": "{'order_id': 42, 'Email': 'A@Example.com', 'dry': True}",
        "result": {"status": "ok", "rows": 12.0},
        "failure": failure_json("requests.exceptions.ReadTimeout", "Gateway timed out", None,
                                {"gateway": "test-gw", "attempt": 3})})
    for term in ("a:42", "a:hello world", "w:hello", "w:world", "k:order_id", "k:order_id=42",
                 "k:email=a@example.com", "k:dry=true", "r:status=ok", "r:rows=12",
                 "e:requests.exceptions.readtimeout", "e:readtimeout", "m:gateway", "m:timed",
                 "d:gateway=test-gw", "d:attempt=3", "w:test-gw", "w:42"):
        assert term in terms, term
    assert all(SEPARATOR not in term for term in terms)


def test_the_replayable_call_wins_over_the_repr():
    terms = record_terms({"args": "(<object at 0x1>,)", "kwargs": "{}",
                          "call": {"args": [7], "kwargs": {"region": "eu"}}})
    assert {"a:7", "k:region=eu"} <= set(terms)


@pytest.mark.parametrize("text", ["(<object at 0x1>,)", "{'a': 1", "((((" * 300, "x" * 10_000,
                                  "__import__('os').system('true')", "{'k': b'\\x00\\xff'}"])
def test_hostile_or_cut_reprs_give_no_terms_and_no_error(text):
    terms = record_terms({"args": text, "kwargs": text})
    assert all(term.startswith(("a:", "k:", "w:")) for term in terms)
    assert len(terms) <= MAX_TERMS


def test_terms_are_bounded_per_write():
    huge = {f"key{n}": "v" * 500 for n in range(1000)}
    failure = {"exc_type": "E" * 500, "exc_message": "word " * 10_000, "details": huge}
    terms = record_terms({"kwargs": repr(huge)[:4000], "result": huge, "failure": failure})
    assert len(terms) == MAX_TERMS
    assert max(len(term) for term in terms) <= 2 + 100 + 1 + 100


def test_the_search_syntax():
    search = parse('kwargs:order_id=42 exc:TimeoutError msg:"timed out" detail:gateway=test-gw '
                   'detail:attempt args:null result:OK name:bill id:3f2a free "two words"')
    assert search.terms == ["k:order_id=42", "e:timeouterror", "m:timed", "m:out", "d:gateway=test-gw",
                            "d:attempt", "a:none", "r:ok"]
    assert search.names == ["bill"] and search.ids == ["3f2a"]
    assert search.free == [("free", "w:free"), ("two words", "w:two words")]
    assert parse("https://x.example/a").free == [("https://x.example/a", "w:https://x.example/a")]
    for bad, message in (('kwargs:"open', "unclosed quote"), ("x" * 1001, "at most 1000"),
                         (" ".join("a" * 17), "at most 16"), ("msg:!", "no word")):
        with pytest.raises(SearchError, match=message):
            parse(bad)


def failed(registry, task_id, name, kwargs, exc_type, message, details, now):
    registry.write(task_id, "scheduled", fields={"name": name, "state": "PENDING", "kwargs": repr(kwargs),
                                                 "args": "()"}, now=now)
    registry.write(task_id, "failed", fields={"state": "FAILURE",
                                              "failure": failure_json(exc_type, message, None, details)},
                   now=now + 1)


def test_listing_finds_tasks_by_what_is_inside(registry, listing):
    for number in range(300):
        task_id = f"order-{number:04d}"
        if number % 100 == 7:
            failed(registry, task_id, "shop.charge", {"order_id": number}, "TimeoutError",
                   f"gateway timed out after {number} s", {"gateway": "test-gw"}, 1000.0 + number)
        else:
            registry.write(task_id, "finished", fields={
                "name": "shop.ship", "state": "SUCCESS", "kwargs": repr({"order_id": number}), "args": "()",
                "result": {"tracking": f"TR{number}"}}, now=1000.0 + number)
    assert walk(listing, "kwargs:order_id=42") == ["order-0042"]
    assert walk(listing, "kwargs:ORDER_ID=107") == ["order-0107"]
    assert walk(listing, "exc:TimeoutError") == ["order-0207", "order-0107", "order-0007"]
    assert walk(listing, "detail:gateway=test-gw msg:timed") == ["order-0207", "order-0107", "order-0007"]
    assert walk(listing, 'msg:"after 107"') == ["order-0107"]
    assert walk(listing, "result:tracking=tr5") == ["order-0005"]
    assert walk(listing, "test-gw") == ["order-0207", "order-0107", "order-0007"]  # free text, a value
    assert walk(listing, "tr12") == ["order-0012"]
    assert walk(listing, "0042") == ["order-0042"]  # still part of an id
    assert walk(listing, "ship kwargs:order_id=7") == []  # every part must match
    assert walk(listing, "exc:TimeoutError", status=["finished"]) == []
    charged = walk(listing, "exc:TimeoutError", name="shop.charge", limit=1)
    assert charged == ["order-0207", "order-0107", "order-0007"]
    assert walk(listing, "kwargs:order_id=42 kwargs:nothing") == []
    with pytest.raises(ListingError, match="unclosed quote"):
        listing.page({"q": 'kwargs:"x'}, 10)


def test_a_rare_term_is_found_at_once_among_many(registry, listing):
    pipe = registry.client.pipeline(transaction=False)
    for number in range(20_000):
        fields = {"name": "bulk.job", "kwargs": repr({"n": number}), "args": "()"}
        registry.write(f"bulk-{number:05d}", "finished", fields=fields, now=1000.0 + number, client=pipe)
    pipe.execute()
    page = listing.page({"q": "kwargs:n=123"}, 50)
    assert page.ids == ["bulk-00123"] and page.next_cursor is None  # one call, no resume cursor


def test_terms_accumulate_and_are_bounded_per_record(registry):
    registry.write("t1", "scheduled", fields={"kwargs": repr({"a": 1})}, now=1.0)
    registry.write("t1", "finished", fields={"result": "done"}, now=2.0)
    kept = registry.client.get(registry.keys.terms("t1")).decode()
    assert {"k:a=1", "r:done"} <= set(kept.split(SEPARATOR))
    for round_ in range(10):
        registry.write("t1", fields={"kwargs": repr({f"k{round_}-{n}": n for n in range(40)})}, now=3.0)
    kept = registry.client.get(registry.keys.terms("t1")).decode()
    assert len(kept.split(SEPARATOR)) == RECORD_TERMS
    assert "terms" not in registry.get("t1")  # beside the record: its reads do not carry them


def test_pruning_a_record_drops_it_from_its_terms(registry, listing):
    registry.write("gone", "finished", fields={"kwargs": repr({"order_id": 9})}, now=1.0)
    assert listing.page({"q": "kwargs:order_id=9"}, 10).ids == ["gone"]
    registry.prune(purge=["gone"])
    assert not registry.client.exists(registry.keys.index("term", "k:order_id=9"))
    assert not registry.client.exists(registry.keys.terms("gone"))


def test_queue_and_exception_type_filters(registry, listing):
    failed(registry, "f1", "shop.charge", {}, "TimeoutError", "slow", {}, 10.0)
    failed(registry, "f2", "shop.charge", {}, "KeyError", "k", {}, 20.0)
    registry.write("f1", fields={"queue": "payments"}, now=30.0)
    registry.write("f3", "finished", fields={"queue": "payments", "name": "shop.ship"}, now=40.0)
    assert walk(listing, "", queue="payments") == ["f3", "f1"]
    assert walk(listing, "", exc_type="KeyError") == ["f2"]
    assert walk(listing, "", exc_type="TimeoutError", queue="payments", status=["failed"]) == ["f1"]


def test_failure_groups_follow_status_name_and_exception(registry):
    keys = registry.keys
    group = "shop.charge\x1fTimeoutError"
    failed(registry, "g1", "shop.charge", {}, "TimeoutError", "slow", {}, 10.0)
    failed(registry, "g2", "shop.charge", {}, "TimeoutError", "slow", {}, 20.0)
    assert registry.client.zrange(keys.index("failgroup", group), 0, -1) == [b"g1", b"g2"]
    assert registry.client.smembers(keys.failure_groups) == {group.encode()}
    registry.write("g1", "skipped", expect=["failed"], now=30.0)  # resolved: out of the inbox
    assert registry.client.zrange(keys.index("failgroup", group), 0, -1) == [b"g2"]
    registry.prune(purge=["g2"])
    assert not registry.client.exists(keys.index("failgroup", group))
    assert registry.client.smembers(keys.failure_groups) == set()


def test_free_text_walks_only_when_it_may_be_part_of_an_id(registry, listing):
    for number in range(50):
        fields = {"name": "job", "kwargs": repr({"code": "zz9"})}
        registry.write(f"abc-{number:03d}", "finished", fields=fields, now=float(number))
    assert registry.client.smembers(registry.keys.id_chars) == {c.encode() for c in "abc-0123456789"}
    assert [g.idsub for g in listing._search_groups("zz9")] == [""]  # "z" is in no id: indexes only
    assert [g.idsub for g in listing._search_groups("c-04")] == ["c-04"]
    assert len(walk(listing, "zz9")) == 50 and walk(listing, "c-049") == ["abc-049"]


def test_a_failure_group_is_a_list_filter(registry, listing):
    from pulse.server.model.inbox import failure_groups, group_id

    failed(registry, "h1", "shop.charge", {}, "TimeoutError", "slow", {}, 10.0)
    failed(registry, "h2", "shop.charge", {}, "KeyError", "k", {}, 20.0)
    failed(registry, "h3", "shop.charge", {}, "TimeoutError", "slower", {}, 30.0)
    inbox = failure_groups(registry)
    assert [(g["name"], g["exc_type"], g["count"]) for g in inbox["groups"]] == [
        ("shop.charge", "TimeoutError", 2), ("shop.charge", "KeyError", 1)]
    assert [t["message"] for t in inbox["groups"][0]["sample"]] == ["slower", "slow"]
    assert inbox["total_failures"] == 3
    group = group_id("shop.charge", "TimeoutError")
    assert inbox["groups"][0]["id"] == group
    assert walk(listing, "", failure_group=group) == ["h3", "h1"]
    with pytest.raises(ListingError, match="malformed failure_group"):
        listing.page({"failure_group": "!!"}, 10)
