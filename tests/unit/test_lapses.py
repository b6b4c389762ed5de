"""Which sockets lose their live feed: a per-task token expired or revoked, a session ended (lapses.py)."""

import pytest

from pulse.agent.tokens import Grant
from pulse.server.http.grants import revoke_all
from pulse.server.upkeep.lapses import Lapses


def grant(task_id: str | None = None, group_id: str | None = None, issued_at: float = 1000.0,
          expires_at: float = 4e9) -> Grant:
    return Grant(task_id=task_id, group_id=group_id, cancel=False, issued_at=issued_at,
                 expires_at=expires_at, token_id="jti")


@pytest.fixture
def lapses(app):
    gone: list[str] = []
    watcher = Lapses(app.extensions["pulse_registry"], gone.append)
    watcher.gone = gone
    return watcher


def test_nothing_watched_asks_redis_nothing(lapses):
    lapses.registry = None  # any use of Redis would raise
    assert lapses.lapsed(now=2000.0) == [] and lapses.sweep() == 0


def test_an_expired_grant_lapses_and_a_good_one_does_not(lapses):
    lapses.watch("good", grant("task-a"))
    lapses.watch("expired", grant("task-a", expires_at=1999.0))
    assert lapses.lapsed(now=2000.0) == ["expired"]


def test_revocation_cuts_tokens_issued_before_it_only(lapses):
    registry = lapses.registry
    lapses.watch("before", grant("task-a", issued_at=1000.0))
    lapses.watch("other-task", grant("task-b", issued_at=1000.0))
    lapses.watch("group", grant(group_id="group-g", issued_at=1000.0))
    cutoff = revoke_all(registry, "task-a", skew=0)
    lapses.watch("after", grant("task-a", issued_at=cutoff + 1))
    assert lapses.lapsed(now=2000.0) == ["before"]
    revoke_all(registry, "group-g", skew=0)
    assert sorted(lapses.lapsed(now=2000.0)) == ["before", "group"]


def test_a_sweep_disconnects_each_lapsed_socket_once_and_forgets_it(lapses):
    lapses.watch("expired", grant("task-a", expires_at=10.0))
    lapses.watch("good", grant("task-a"))
    assert lapses.sweep() == 1 and lapses.gone == ["expired"]
    assert lapses.sweep() == 0 and lapses.gone == ["expired"]
    assert set(lapses.grants) == {"good"}


def test_a_socket_that_left_is_forgotten(lapses):
    lapses.watch("left", grant("task-a", expires_at=10.0))
    lapses.forget("left")
    lapses.forget("never-seen")  # disconnects of operator sockets come here too
    assert lapses.sweep() == 0 and lapses.gone == []


def test_a_socket_of_an_ended_session_lapses_with_the_tokens_in_one_mget(app, lapses):
    sessions = app.extensions["pulse_sessions"]
    kept, ended = sessions.open("operator", "mark"), sessions.open("viewer", "mark")
    lapses.watch_session("kept", sessions.key(kept))
    lapses.watch_session("ended", sessions.key(ended))
    lapses.watch("expired", grant("task-a", expires_at=10.0))
    assert lapses.lapsed(now=2000.0) == ["expired"]
    sessions.end(ended)  # logout, on any server
    assert sorted(lapses.lapsed(now=2000.0)) == ["ended", "expired"]
    assert lapses.sweep() == 2 and set(lapses.sessions) == {"kept"}
