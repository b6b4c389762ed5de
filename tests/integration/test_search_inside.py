"""Search inside tasks through the real stack: tasks sent by a producer, run by a real worker,
found by their arguments, results and failures through GET /api/tasks and the export."""

import uuid

import pytest


def ids(stack, q: str, **params) -> list[str]:
    """Every id the search lists, following cursors."""
    found, cursor = [], None
    while True:
        answer = stack.api("GET", "/api/tasks", params={"q": q, "limit": 100, **params,
                                                         **({"cursor": cursor} if cursor else {})})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        found += [task["id"] for task in body["tasks"]]
        cursor = body["next_cursor"]
        if not cursor:
            return found


@pytest.fixture(scope="module")
def sent(stack, redis_url):
    """Tasks with values of their own, ended: two failures with details, two results, one held."""
    from tests.conftest import producer_app

    mark = uuid.uuid4().hex[:10]
    with producer_app(stack.env) as app:
        failures = [app.send_task("tasks.demo.fail_with_details",
                                  kwargs={"step": 1, "delay": 0.01, "input": f"gw-{mark}-{n}"}).id
                    for n in range(2)]
        echo = app.send_task("tasks.demo.echo", kwargs={"value": {"order": mark, "total": 42}}).id
        plain = app.send_task("tasks.demo.echo", args=[f"plain-{mark}"]).id
        markup = app.send_task("tasks.demo.echo", kwargs={"value": f"<script>alert('{mark}')</script>"}).id
    for task_id in (*failures, echo, plain, markup):
        stack.wait_for(task_id, "failed", "finished")
    return {"mark": mark, "failures": failures, "echo": echo, "plain": plain, "markup": markup}


def test_found_by_keyword_arguments_exception_and_details(stack, sent):
    mark, failures = sent["mark"], sent["failures"]
    assert ids(stack, f"kwargs:input=gw-{mark}-0") == [failures[0]]
    assert ids(stack, f"detail:input=GW-{mark}-1") == [failures[1]]  # case-insensitive
    assert sorted(ids(stack, f"kwargs:input=gw-{mark}-0 exc:ValueError")) == [failures[0]]
    assert ids(stack, f"kwargs:input=gw-{mark}-0 exc:TypeError") == []
    assert failures[0] in ids(stack, 'msg:"could not be parsed"', status="failed")
    assert ids(stack, f"gw-{mark}-1") == [failures[1]]  # free text: a value


def test_found_by_result_and_positional_argument(stack, sent):
    mark = sent["mark"]
    assert ids(stack, f"result:order={mark}") == [sent["echo"]]
    assert ids(stack, f"result:order={mark} result:total=42") == [sent["echo"]]
    assert ids(stack, f"args:plain-{mark}") == [sent["plain"]]
    assert ids(stack, f"result:plain-{mark}") == [sent["plain"]]


def test_markup_is_a_value_like_any_other_and_comes_back_as_data(stack, sent):
    mark = sent["mark"]
    answer = stack.api("GET", "/api/tasks", params={"q": f"result:\"<script>alert('{mark}')</script>\""})
    assert [task["id"] for task in answer.json()["tasks"]] == [sent["markup"]]
    assert answer.headers["Content-Type"].startswith("application/json")


def test_the_export_takes_the_same_search(stack, sent):
    q = f"exc:ValueError kwargs:input=gw-{sent['mark']}-0"
    answer = stack.api("GET", "/api/tasks.ndjson", params={"q": q})
    assert answer.status_code == 200
    lines = [line for line in answer.text.splitlines() if line.strip()]
    assert len(lines) == 1 and sent["failures"][0] in lines[0]


@pytest.mark.parametrize("q, message", [('kwargs:"open', "unclosed quote"), ("a " * 17, "at most 16"),
                                        ("msg:!!", "no word")])
def test_a_search_that_cannot_be_read_is_answered_400_saying_why(stack, q, message):
    answer = stack.api("GET", "/api/tasks", params={"q": q})
    assert answer.status_code == 400 and message in answer.json()["error"]
