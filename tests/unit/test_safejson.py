"""Anything a task hands over becomes bounded, valid JSON."""

import json
import math

from pulse.record.safejson import MAX_DEPTH, bounded_json


def test_plain_json_is_unchanged():
    value = {"a": [1, 2.5, "x", None, True], "b": {"c": "d"}}
    assert bounded_json(value) == value


def test_non_json_values_become_reprs():
    assert bounded_json({"when": {1, 2}, "obj": object()})["obj"].startswith("<object")
    assert bounded_json(b"bytes") == "b'bytes'"


def test_nan_and_infinity_become_strings():
    assert bounded_json([math.nan, math.inf]) == ["nan", "inf"]


def test_deep_nesting_is_cut():
    deep = current = {}
    for _ in range(1000):
        current["x"] = current = {}
    text = json.dumps(bounded_json(deep))
    assert text.count("{") <= MAX_DEPTH + 1


def test_gigantic_values_become_a_truncated_preview():
    out = bounded_json({f"row{n}": "x" * 1000 for n in range(400)})
    assert out["truncated"] is True and out["size"] > 16_384
    assert len(json.dumps(out)) < 16_384
