"""How the analytics are kept in Redis: bucket bounds, label caps, TTLs and the spelling of fields.

``lua/write.lua`` writes them when a record enters the status it ended in (``statuses.OUTCOMES``),
with the same constants spelled in Lua (tests/unit/test_analytics.py checks they agree);
``server/model/analytics.py`` reads them. Per minute and per hour (``an:m:``, ``an:h:``), a field is
``<kind><what>\\x1f<name>``; in the totals (``an:total``) ``<kind><what>\\x1f<queue>\\x1f<name>``. Kinds:
``o`` an outcome count (what: the status), ``r`` / ``w`` a runtime / queue wait bucket count (what:
the bucket's number, 1 = the first bound, ``len(BOUNDS) + 1`` = above the last), ``R`` / ``W`` (totals
only) the sum of the runtimes / queue waits, in seconds.
"""

# Upper bounds in seconds (a value v counts in the first bucket with v <= bound), 1-2.5-5 per decade
# from a millisecond to almost three hours: the same for every name, so buckets add up across minutes,
# names and servers, and the same as the Prometheus histograms' ``le`` labels.
BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0,
          100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0)
# Distinct names and queues counted separately, first come first kept; the rest count as OTHER, as
# do a name or queue over LABEL_LIMIT bytes or holding the field separator. A missing one is UNKNOWN.
NAME_CAP, QUEUE_CAP, LABEL_LIMIT = 200, 50, 200
OTHER, UNKNOWN = "other", "unknown"
# A minute is read while it is in the last day; an hour while any of its minutes is.
MINUTE_TTL, HOUR_TTL = 86_400 + 120, 86_400 + 7_200
DAY = 86_400
SEPARATOR = "\x1f"
OUTCOME, RUNTIME, WAIT, RUNTIME_SUM, WAIT_SUM = "o", "r", "w", "R", "W"


def outcome_field(status: str, name: str) -> str:
    """The field of a minute's or hour's count of ``name``'s tasks that ended ``status``."""
    return f"{OUTCOME}{status}{SEPARATOR}{name}"


def split_field(field: str) -> tuple[str, str, str]:
    """(kind, what, rest) of a field: rest is the name, or in the totals ``<queue>\\x1f<name>``."""
    head, _, rest = field.partition(SEPARATOR)
    return head[:1], head[1:], rest
