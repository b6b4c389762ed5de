"""Waiters: the places each credential may hold for long polls."""

import threading

from pulse.server.push.waiters import Waiters


def test_each_credential_holds_at_most_its_places_and_gives_them_back():
    waiters = Waiters(threading.Event)
    with waiters.hold("a", 2) as first, waiters.hold("a", 2) as second:
        with waiters.hold("a", 2) as third, waiters.hold("b", 2) as other:
            assert (first, second, third, other) == (True, True, False, True)
            assert (waiters.holding("a"), waiters.holding("b")) == (2, 1)
    assert waiters.holding("a") == 0 and waiters._held == {}
    with waiters.hold("a", 2) as again:
        assert again


def test_a_place_is_given_back_when_the_wait_raises():
    waiters = Waiters(threading.Event)
    try:
        with waiters.hold("a", 1):
            raise RuntimeError("the store failed")
    except RuntimeError:
        pass
    assert waiters.holding("a") == 0
