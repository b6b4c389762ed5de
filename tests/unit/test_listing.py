"""Listing over the registry's indexes: filters, counts and a stable cursor."""


import pytest

from pulse.server.model.listing import Listing, ListingError, decode_cursor, encode_cursor


@pytest.fixture
def listing(registry):
    return Listing(registry)


def fill(registry, count, now=1000.0, **fields):
    pipe = registry.client.pipeline(transaction=False)
    ids = []
    for number in range(count):
        task_id = f"{fields.get('name', 'job')}-{number:05d}"
        status = ("finished", "failed", "running")[number % 3]
        registry.write(task_id, status, fields={"name": fields.get("name", "job"),
                                                "worker": f"w{number % 2}", "state": status.upper()},
                       now=now + number, client=pipe)
        ids.append(task_id)
    pipe.execute()
    return ids


def walk(listing, filters, limit, order="desc"):
    ids, cursor = [], None
    while True:
        page = listing.page(filters, limit, cursor, order)
        ids += page.ids
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor


def test_pages_cover_everything_once_newest_first(registry, listing):
    ids = fill(registry, 1000)
    assert walk(listing, {}, 64) == list(reversed(ids))


def test_oldest_first_too(registry, listing):
    ids = fill(registry, 600)
    assert walk(listing, {}, 64, "asc") == ids
    assert walk(listing, {"status": ["failed"], "since": 1100.0}, 7, "asc") == [
        i for n, i in enumerate(ids) if n % 3 == 1 and n >= 100]
    with pytest.raises(ListingError, match="order"):
        listing.page({}, 10, order="sideways")


@pytest.mark.parametrize("order", ["desc", "asc"])
def test_ties_on_the_same_score_are_neither_lost_nor_repeated(registry, listing, order):
    pipe = registry.client.pipeline(transaction=False)
    for number in range(700):
        registry.write(f"tie-{number:04d}", "finished", now=5000.0, client=pipe)
    pipe.execute()
    seen = walk(listing, {}, 50, order)
    assert len(seen) == 700 and len(set(seen)) == 700


def test_new_records_during_paging_do_not_shift_pages(registry, listing):
    ids = fill(registry, 300)
    first = listing.page({}, 100)
    fill(registry, 50, now=9000.0, name="late")
    rest = walk_from(listing, first.next_cursor, 100)
    assert first.ids + rest == list(reversed(ids))


def walk_from(listing, cursor, limit):
    ids = []
    while cursor:
        page = listing.page({}, limit, cursor)
        ids += page.ids
        cursor = page.next_cursor
    return ids


def test_filters_and_their_combinations(registry, listing):
    ids = fill(registry, 90)
    fill(registry, 30, now=2000.0, name="other")
    assert set(walk(listing, {"status": ["failed"]}, 500)) == set(ids[1::3]) | {
        f"other-{n:05d}" for n in range(1, 30, 3)}
    assert len(walk(listing, {"name": "other"}, 500)) == 30
    both = walk(listing, {"name": "job", "status": ["running", "failed"], "worker": "w0"}, 500)
    assert set(both) == {i for n, i in enumerate(ids) if n % 3 != 0 and n % 2 == 0}
    assert len(walk(listing, {"state": "FINISHED"}, 500)) == 40
    window = walk(listing, {"since": 1010.0, "until": 1019.0}, 500)
    assert window == list(reversed(ids[10:20]))


def test_search_by_id_or_name_substring(registry, listing):
    fill(registry, 20)
    fill(registry, 5, now=3000.0, name="report.build")
    assert walk(listing, {"q": "00013"}, 50) == ["job-00013"]
    assert len(walk(listing, {"q": "REPORT"}, 50)) == 5
    assert walk(listing, {"q": "*"}, 50) == []  # glob characters are matched literally
    assert walk(listing, {"q": "nothing-like-this"}, 50) == []


def test_a_sparse_filter_answers_with_a_resume_cursor(registry, listing, monkeypatch):
    monkeypatch.setattr("pulse.server.model.listing.SCAN_CAP", 100)
    # Two big indexes whose intersection is one old record: no index is small enough to drive.
    fill(registry, 400)
    pipe = registry.client.pipeline(transaction=False)
    for number in range(400):
        registry.write(f"o-{number}", "running", fields={"name": "other", "worker": "w9"},
                       now=1000.0 + number, client=pipe)
    pipe.execute()
    registry.write("rare", "lost", fields={"name": "job", "worker": "w9"}, now=1.0)
    first = listing.page({"name": "job", "worker": "w9"}, 10)
    assert first.ids == [] and first.next_cursor is not None
    assert walk(listing, {"name": "job", "worker": "w9"}, 10) == ["rare"]


def test_counts(registry, listing):
    fill(registry, 30)
    counts = listing.counts()
    assert counts["total"] == 30
    assert counts["by_status"]["finished"] == 10 and counts["by_status"]["expired"] == 0


@pytest.mark.parametrize("filters", [{"status": ["nope"]}])
def test_bad_filters(listing, filters):
    with pytest.raises(ListingError, match="unknown status"):
        listing.page(filters, 10)


def test_bad_limit_and_cursor(listing):
    with pytest.raises(ListingError, match="limit"):
        listing.page({}, 0)
    with pytest.raises(ListingError, match="cursor"):
        listing.page({}, 10, "not-a-cursor")
    assert decode_cursor(encode_cursor("12.5", "a|b")) == ("12.5", "a|b")
