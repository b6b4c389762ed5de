"""The Redis work of one listing request is bounded (issue 14): Redis is also the broker, and a
Lua script holds it whole, so no script call may run longer than a small budget.

Speed is measured in bench/api.py; here the bound is structural: the Redis commands one script
call runs (counted by Redis's own command statistics), and the shape of a large page.
"""

import json
from pathlib import Path

import jsonschema_rs
import pytest

import pulse
from pulse.record.statuses import STATUSES
from pulse.server.model.listing import Listing
from pulse.server.model.taskjson import SUMMARY_FIELDS

# A script call runs at most this many Redis commands: it reads at most 400 records (2,000 units
# of work, 5 a record read), plus its range reads, counts, and one score per id it returns.
CALL_COMMANDS = 1_000
# A request reads at most 2,000 records (10,000 units), plus the same few extras per call.
REQUEST_COMMANDS = 2_500
CALLS_PER_REQUEST = 5  # 10,000 index entries walked, 2,000 per call, when no record is read
LIMIT = 500
# The only name without an "e": a search for "E" is in the other names (case-insensitive) and in
# no id (ids are lowercase), so filtered on this name it matches nothing and walks all it may.
QUIET = "app.sync.pull_crm"
LOUD = ("app.reports.build", "app.mail.send", "app.billing.charge", "app.media.transcode")
ALL_STATUSES_FINISHED_LAST = [s for s in STATUSES if s != "finished"] + ["finished"]


def fill(registry, count):
    """``count`` records, half of them named QUIET, most finished, one a second."""
    pipe = registry.client.pipeline(transaction=False)
    for number in range(count):
        name = QUIET if number % 2 else LOUD[number // 2 % len(LOUD)]
        status = "failed" if number % 10 == 3 else "running" if number % 10 == 7 else "finished"
        registry.write(f"task-{number:06d}", status, fields={"name": name, "state": status.upper(),
                                                             "worker": f"w{number % 3}"},
                       now=1000.0 + number, client=pipe)
        if number % 1000 == 999:
            pipe.execute()
    pipe.execute()


class Counted:
    """The listing script, wrapped: the commands each call ran inside Redis, from INFO commandstats."""

    def __init__(self, listing: Listing) -> None:
        self.client = listing.client
        self.script = listing._script
        self.calls: list[int] = []

    def __call__(self, keys, args):
        self.client.config_resetstat()
        reply = self.script(keys=keys, args=args)
        stats = self.client.info("commandstats")
        # What the script ran: every command but the script call itself and this counting.
        ran = sum(stat["calls"] for name, stat in stats.items()
                  if name not in ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_config", "cmdstat_info"))
        self.calls.append(ran)
        return reply


@pytest.fixture
def counted(registry):
    listing = Listing(registry)
    counter = Counted(listing)
    listing._script = counter
    return listing, counter


def pages(listing, counter, filters, limit=LIMIT, order="desc"):
    """Every page of a listing, each as (ids, the commands of each of its script calls)."""
    out, cursor = [], None
    while True:
        counter.calls.clear()
        page = listing.page(filters, limit, cursor, order)
        out.append((page.ids, list(counter.calls)))
        if page.next_cursor is None:
            return out
        cursor = page.next_cursor


@pytest.mark.parametrize("order", ["desc", "asc"])
def test_a_search_that_matches_nothing_holds_redis_in_short_calls(registry, counted, order):
    listing, counter = counted
    fill(registry, 12_000)  # 6,000 named QUIET: the search reads the record of each
    filters = {"name": QUIET, "status": ALL_STATUSES_FINISHED_LAST, "q": "E"}
    answered = pages(listing, counter, filters, order=order)
    for ids, calls in answered:
        # One record read an entry at most (plus ranges and counts), never one lookup per status
        # and per name index an entry; and a request stops after a bounded work.
        assert max(calls) <= CALL_COMMANDS, calls
        assert sum(calls) <= REQUEST_COMMANDS, calls
        assert ids == []
    assert len(answered) >= 3  # 6,000 records to read, at most 2,000 a request


def test_a_plain_walk_goes_in_short_calls_and_at_most_10000_entries_a_request(registry, counted):
    listing, counter = counted
    fill(registry, 12_000)
    (first, first_calls), (rest, rest_calls) = pages(listing, counter, {"q": "sat-"})
    assert len(first_calls) == CALLS_PER_REQUEST and len(rest_calls) == 1  # then the last 2,000
    assert max(first_calls + rest_calls) <= CALL_COMMANDS
    assert first == rest == []


def test_split_calls_keep_the_answers(registry, counted):
    listing, counter = counted
    fill(registry, 12_000)
    # Sparse matches, found across several calls and requests, in both orders.
    wanted = [f"task-{n:06d}" for n in range(12_000) if n % 10 in (3, 7) and "000" in f"{n:06d}"]
    for order in ("desc", "asc"):
        filters = {"q": "000", "name": QUIET, "status": ["failed", "running"]}
        found = [task_id for ids, _calls in pages(listing, counter, filters, order=order) for task_id in ids]
        assert found == (wanted if order == "asc" else wanted[::-1])
    # An id search beside a filter reads no record for an entry whose id does not match.
    counter.calls.clear()
    # ("sat-" is made of characters ids have, so it may be part of one: only the walk can tell.)
    assert listing.page({"q": "sat-", "name": QUIET, "status": ["finished"]}, LIMIT).ids == []
    assert len(counter.calls) == 3 and max(counter.calls) <= 20, counter.calls  # 6,000 entries
    # Matched by name, with a worker filter; the limit is reached in the middle of a call.
    charged = [f"task-{n:06d}" for n in reversed(range(12_000))
               if n % 2 == 0 and n // 2 % len(LOUD) == 2 and n % 3 == 1]
    page = listing.page({"q": "CHARGE", "worker": "w1"}, 7)
    second = listing.page({"q": "CHARGE", "worker": "w1"}, 7, page.next_cursor)
    assert page.ids + second.ids == charged[:14]
    everything = [task_id for ids, _calls in pages(listing, counter, {"q": "CHARGE"}, 100)
                  for task_id in ids]
    assert everything == [f"task-{n:06d}" for n in reversed(range(0, 12_000, 2)) if n // 2 % len(LOUD) == 2]


def test_above_100_tasks_a_page_holds_summaries(app, client, auth_headers):
    registry = app.extensions["pulse_registry"]
    for number in range(120):
        registry.write(f"sum-{number:03d}", "running", fields={"name": "job"}, point=(1000.0 + number, 1),
                       now=1000.0 + number)
    full = client.get("/api/tasks?limit=100", headers=auth_headers).get_json()["tasks"]
    assert len(full) == 100 and all("history" in task and "can_revoke" in task for task in full)
    answer = client.get("/api/tasks?limit=101", headers=auth_headers).get_json()
    lean = answer["tasks"]
    assert len(lean) == 101 and all(set(task) == set(SUMMARY_FIELDS) for task in lean)
    assert lean[0]["id"] == "sum-119" and lean[0]["status"] == "running"
    # As documented: a TaskPage whose tasks are summaries.
    spec = json.loads((Path(pulse.__file__).parent / "server" / "http" / "openapi.json").read_text())

    def schema(name):
        return jsonschema_rs.Draft202012Validator({"components": spec["components"],
                                                   "$ref": f"#/components/schemas/{name}"})

    schema("TaskPage").validate(answer)
    assert not schema("TaskSummary").is_valid(full[0]) and not schema("Task").is_valid(lean[0])
