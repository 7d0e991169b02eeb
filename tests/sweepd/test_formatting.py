"""sweepd.formatting: finite checks, JSON-safe values, numbers and durations for people, flatten,
field paths; and the pruners' fmt_num (3 digits, 'n/a'), which their decision sentences use."""

from __future__ import annotations

import json
import math

import pytest

from sweepd.formatting import dotted_path, finite, flatten, fmt_num, fmt_seconds, is_finite_number, json_safe
from sweepd.pruners import base as pruner_base

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("value,expected", [
    (1, True), (1.5, True), (0, True), (-2e-9, True),
    (NAN, False), (INF, False), (-INF, False),
    (True, False), (None, False), ("1.5", False), ([1], False),
])
def test_is_finite_number(value, expected):
    assert is_finite_number(value) is expected


@pytest.mark.parametrize("value,expected", [
    (1, 1.0), (2.5, 2.5), ("3.5", 3.5), (None, None), (True, None), (NAN, None), (-INF, None),
    ("abc", None), ([1], None), ("inf", None),
])
def test_finite_is_a_float_or_none(value, expected):
    got = finite(value)
    assert got == expected and (got is None or type(got) is float)


def test_json_safe_replaces_nan_and_infinities_at_any_depth_and_keeps_the_rest():
    doc = {"a": NAN, "b": [1.0, INF, {"c": -INF, "d": "x"}], "e": (2, NAN), "f": None, "g": True, "h": 3}
    safe = json_safe(doc)
    assert safe == {"a": None, "b": [1.0, None, {"c": None, "d": "x"}], "e": [2, None], "f": None, "g": True, "h": 3}
    json.dumps(safe, allow_nan=False)  # no NaN/Infinity tokens left
    assert json_safe(1.5) == 1.5 and json_safe(NAN) is None and json_safe("nan") == "nan"
    assert doc["a"] is not None and math.isnan(doc["a"])  # the input is not changed


@pytest.mark.parametrize("value,expected", [
    (None, "–"), (True, "true"), (False, "false"),
    (12345, "12,345"), (-7, "-7"), (2.0, "2"), (2048.0, "2,048"),
    (3e-5, "3e-05"), (1.84123, "1.841"), (0.1 + 0.2, "0.3"), (1234.5, "1234"),
    (12345.6, "12,346"),  # no exponent once the significant digits run out
    (1e20, "100,000,000,000,000,000,000"),
    (NAN, "nan"), (INF, "inf"), (-INF, "-inf"),
    ("abc", "abc"),
])
def test_fmt_num_for_reports(value, expected):
    assert fmt_num(value) == expected


def test_fmt_num_digits_and_missing_marker():
    assert fmt_num(1.84123, digits=3) == "1.84" and fmt_num(1234.5, digits=3) == "1,234"
    assert fmt_num(None, missing="n/a") == "n/a" and fmt_num(None, digits=2, missing="") == ""


@pytest.mark.parametrize("value,expected", [
    (1.8412, "1.84"), (2048, "2,048"), (2048.0, "2,048"), (1234.5, "1,234"), (0.000123456, "0.000123"),
    (None, "n/a"), (NAN, "n/a"), (INF, "n/a"),
])
def test_the_pruners_fmt_num(value, expected):
    """The pruners' decision sentences: 3 significant digits, 'n/a' for missing or non-finite."""
    assert pruner_base.fmt_num(value) == expected
    assert pruner_base.finite is finite  # the pruners import both from base


@pytest.mark.parametrize("seconds,expected", [
    (None, "–"), (0, "0.0 s"), (5, "5.0 s"), (59.94, "59.9 s"), (60, "1m 00s"), (723, "12m 03s"),
    (3599.6, "1h 00m"), (3725, "1h 02m"), (90061, "25h 01m"),
])
def test_fmt_seconds(seconds, expected):
    assert fmt_seconds(seconds) == expected


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}
    assert flatten({"a": {"b": 1}}, "x.") == {"x.a.b": 1}
    assert flatten(None) == {} and flatten({}) == {}
    assert flatten({"a": [1, {"b": 2}]}) == {"a": [1, {"b": 2}]}  # lists are values, not branches


def test_dotted_path():
    assert dotted_path(("data", "train", 0, "path")) == "data.train[0].path"
    assert dotted_path(["search", "space", "lr"]) == "search.space.lr"
    assert dotted_path([0, "x", 1, 2]) == "[0].x[1][2]"
    assert dotted_path(()) == ""
