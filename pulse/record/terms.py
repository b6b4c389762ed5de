"""Search terms: what a task's arguments, result and failure can be found by, and the search syntax.

A record's terms are computed where it is written (``registry.step``) and indexed with it (one
sorted set per term, ``i:term:<term>``, kept by ``lua/write.lua`` and ``lua/prune.lua``), so a
search inside tasks is an index lookup, not a pass over every record's JSON. Terms are exact,
case-insensitive values: a keyword argument's value, a result's, a word of an exception message.

The search syntax (tokens separated by spaces, all must match; quote a value that has spaces)::

    kwargs:order_id=42   kwargs:order_id     a keyword argument with that value / at all
    args:42                                  a positional argument
    result:ok   result:status=ok             a result value, or a result dict's key with a value
    exc:TimeoutError                         the exception type (the class name or the dotted one)
    msg:"timed out"                          words of the exception message
    detail:gateway=test-gw   detail:gateway  a custom failure detail with that value / at all
    name:billing   id:3f2a                   part of the task name / of the id
    anything else                            part of the id or the name, or any value or word above
"""

import ast
import re
import shlex
from collections.abc import Iterable, Iterator
from typing import Any

VALUE_LIMIT = 100   # characters of a value kept in a term: longer values are found by their start
WORDS_LIMIT = 24    # words taken from one text (a message, a long value)
MAX_TERMS = 64      # per write; a record keeps at most RECORD_TERMS (lua/write.lua)
RECORD_TERMS = 128
SEPARATOR = "\x1f"  # between terms in the record's ``terms`` field; never inside one (see norm)
QUERY_LIMIT = 1000  # characters of a search (the API's maxLength)
MAX_TOKENS = 16
REPR_PARSE_LIMIT = 4096  # an argument repr longer than this is not parsed (literal_eval's cost)

WORD = re.compile(r"\w+")

# Query prefix -> term prefix.
QUALIFIERS = {"args": "a:", "kwargs": "k:", "result": "r:", "exc": "e:", "msg": "m:", "detail": "d:"}
KEYED = ("kwargs", "result", "detail")  # take key=value (or key alone)
SCALARS = (str, int, float, bool, type(None))


class SearchError(ValueError):
    """The search cannot be parsed; the message says why."""


def norm(value: Any) -> str:
    """A value as terms spell it: lowercase, whitespace collapsed, cut to VALUE_LIMIT."""
    if value is None:
        text = "none"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        text = str(int(value))  # 42.0 in JSON is 42 in a repr
    else:
        text = str(value)
    # str.split() also splits on \x1f (Python counts it as whitespace), so no term holds SEPARATOR.
    return " ".join(text.lower().split())[:VALUE_LIMIT]


def words(text: str) -> list[str]:
    """The words of ``text`` worth a term: two characters or more."""
    return [word for word in WORD.findall(text.lower()) if len(word) > 1][:WORDS_LIMIT]


# ---- the terms of a record -----------------------------------------------------------------------

def record_terms(fields: dict[str, Any]) -> list[str]:
    """The terms of what ``fields`` (a registry write) says about arguments, result and failure."""
    out: dict[str, None] = {}  # ordered and unique
    for term in _terms(fields):
        if len(out) >= MAX_TERMS:
            break
        out[term] = None
    return list(out)


def _terms(fields: dict[str, Any]) -> Iterator[str]:
    call = fields.get("call")
    if isinstance(call, dict):  # the JSON arguments the producer kept for a replay
        yield from _arguments(call.get("args"), call.get("kwargs"))
    else:
        args, kwargs = _parsed(fields.get("args")), _parsed(fields.get("kwargs"))
        if args is not None or kwargs is not None:
            yield from _arguments(args, kwargs)
    if "result" in fields:
        yield from _keyed("r:", fields["result"])
    failure = fields.get("failure")
    if isinstance(failure, dict):
        yield from _failure(failure)


def _parsed(text: Any) -> Any:
    """A repr of arguments (Celery's ``argsrepr``) as Python values, or None when it is not a
    literal (a custom object, a repr cut short)."""
    if not isinstance(text, str) or not text or len(text) > REPR_PARSE_LIMIT:
        return None
    try:
        return ast.literal_eval(text)
    except Exception:  # malformed, cut, too deep: not searchable inside, never an error
        return None


def _arguments(args: Any, kwargs: Any) -> Iterator[str]:
    if isinstance(kwargs, dict):
        for key, value in list(kwargs.items())[:MAX_TERMS]:
            yield from _pair("k:", key, value)
    if isinstance(args, list | tuple):
        for value in list(args)[:MAX_TERMS]:
            if isinstance(value, SCALARS):
                yield "a:" + norm(value)
                yield from _free(value)


def _keyed(prefix: str, value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in list(value.items())[:MAX_TERMS]:
            yield from _pair(prefix, key, item)
    elif isinstance(value, list | tuple):
        for item in list(value)[:MAX_TERMS]:
            if isinstance(item, SCALARS):
                yield prefix + norm(item)
                yield from _free(item)
    elif isinstance(value, SCALARS):
        yield prefix + norm(value)
        yield from _free(value)


def _pair(prefix: str, key: Any, value: Any) -> Iterator[str]:
    key = norm(key).replace("=", " ")
    yield prefix + key
    if isinstance(value, SCALARS):
        yield f"{prefix}{key}={norm(value)}"
        yield from _free(value)


def _free(value: Any) -> Iterator[str]:
    """Free-text terms of a value: the whole value, and its words when it has several."""
    text = norm(value)
    yield "w:" + text
    if isinstance(value, str):
        parts = words(text)
        if len(parts) > 1:
            yield from ("w:" + part for part in parts)


def _failure(failure: dict[str, Any]) -> Iterator[str]:
    exc_type = failure.get("exc_type")
    if isinstance(exc_type, str) and exc_type:
        full = norm(exc_type)
        short = full.rsplit(".", 1)[-1]
        for name in dict.fromkeys((full, short)):
            yield "e:" + name
            yield "w:" + name
    message = failure.get("exc_message")
    if isinstance(message, str):
        for word in words(message):
            yield "m:" + word
            yield "w:" + word
    details = failure.get("details")
    if isinstance(details, dict):
        for key, value in list(details.items())[:MAX_TERMS]:
            yield from _pair("d:", key, value)


# ---- a search --------------------------------------------------------------------------------

class Search:
    """A parsed search: index terms that must all match, parts of names and ids, free words."""

    def __init__(self) -> None:
        self.terms: list[str] = []          # each must be among the task's terms
        self.names: list[str] = []          # each must be part of the task's name
        self.ids: list[str] = []            # each must be part of the id (as typed)
        self.free: list[tuple[str, str]] = []  # (as typed, term): part of the id or name, or a term

    @property
    def inside(self) -> bool:
        """Whether it looks inside tasks (needs the server's terms to be matched)."""
        return bool(self.terms or self.free)


def parse(q: str) -> Search:
    """The search ``q`` (see the module's docstring); SearchError when it cannot be read."""
    if len(q) > QUERY_LIMIT:
        raise SearchError(f"the search is {len(q)} characters: at most {QUERY_LIMIT}")
    try:
        tokens = shlex.split(q)
    except ValueError:
        raise SearchError("the search has an unclosed quote") from None
    if len(tokens) > MAX_TOKENS:
        raise SearchError(f"the search has {len(tokens)} parts: at most {MAX_TOKENS}")
    search = Search()
    for token in tokens:
        _add(search, token)
    return search


def _add(search: Search, token: str) -> None:
    field, colon, value = token.partition(":")
    field = field.lower()
    if not colon or not value or field not in (*QUALIFIERS, "name", "id"):
        search.free.append((token, "w:" + norm(token)))  # "https://x" is free text too
        return
    if field == "name":
        search.names.append(value)
    elif field == "id":
        search.ids.append(value)
    elif field == "msg":
        parts = words(value)
        if not parts:
            raise SearchError(f"msg:{value[:40]!r} has no word to look for")
        search.terms += ["m:" + part for part in parts]
    elif field in KEYED:
        key, equals, wanted = value.partition("=")
        key = norm(key).replace("=", " ")
        search.terms.append(QUALIFIERS[field] + (f"{key}={_value(wanted)}" if equals else key))
    elif field == "exc":
        search.terms.append("e:" + norm(value))
    else:  # args
        search.terms.append("a:" + _value(value))


def _value(typed: str) -> str:
    """A typed value as terms spell it: JSON's null is Python's None."""
    value = norm(typed)
    return "none" if value == "null" else value


def joined(terms: Iterable[str]) -> str:
    return SEPARATOR.join(terms)
