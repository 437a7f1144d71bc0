"""The input layer (mega_cluster.validation): every bound of docs/limits.md, and
properties over arbitrary input: a value is accepted unchanged or refused with a
documented error, never anything else."""

from __future__ import annotations

import datetime
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mega_cluster.exceptions import (
    ArgumentTypeError,
    InvalidArgument,
    InvalidLockKey,
    InvalidName,
    MessageEncodeError,
)
from mega_cluster.validation import (
    MAX_COUNT,
    MAX_JSON_DEPTH,
    MAX_SECONDS,
    encode_json,
    json_depth,
    validate_count,
    validate_lock_key,
    validate_name,
    validate_seconds,
)

#: Any text, lone surrogates included (hypothesis leaves them out by default).
any_text = st.text(st.characters(codec=None, categories=None), max_size=300)
#: Numbers of every awkward kind, plus things that are not numbers.
any_number = st.one_of(
    st.floats(),
    st.integers(),
    st.integers(min_value=2**30, max_value=2**80),
    st.sampled_from([10**400, True, False, None, "5", b"5", math.nan, -math.inf]),
)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)

FAST = settings(max_examples=200, deadline=None)


@pytest.mark.parametrize("name", ["x\n", "x\r", "\nx", "a" * 200 + "\n", "é", ""])
def test_names_are_matched_in_full(name):
    """A trailing newline (which ``$`` lets through) and anything outside the
    alphabet raise InvalidName saying what to use."""
    with pytest.raises(InvalidName, match="trailing newline"):
        validate_name(name)


@FAST
@given(any_text)
def test_a_name_is_returned_unchanged_or_refused(name):
    """Property: the name comes back as given, or InvalidName is raised."""
    try:
        result = validate_name(name)
    except InvalidName:
        return
    assert result == name
    assert 1 <= len(name) <= 200 and "\n" not in name


def test_lock_keys_must_encode_as_utf8():
    """A lone surrogate is an InvalidLockKey, not a UnicodeEncodeError later."""
    with pytest.raises(InvalidLockKey, match="surrogate"):
        validate_lock_key("k\ud800")
    assert validate_lock_key("é" * 256) == "é" * 256  # 512 bytes
    with pytest.raises(InvalidLockKey, match="513 bytes"):
        validate_lock_key("é" * 256 + "x")


@FAST
@given(any_text)
def test_a_lock_key_is_returned_unchanged_or_refused(key):
    try:
        result = validate_lock_key(key)
    except InvalidLockKey:
        return
    assert result == key and 0 < len(key.encode()) <= 512


@pytest.mark.parametrize(
    ("value", "error", "words"),
    [
        (math.nan, InvalidArgument, "finite"),
        (math.inf, InvalidArgument, "at most"),
        (-math.inf, InvalidArgument, ">= 0"),
        (1e300, InvalidArgument, "at most"),
        (10**400, InvalidArgument, "at most"),  # no OverflowError
        (-1, InvalidArgument, ">= 0"),
        (True, ArgumentTypeError, "number of seconds"),
        ("5", ArgumentTypeError, "number of seconds"),
    ],
    ids=["nan", "inf", "-inf", "1e300", "10**400", "-1", "bool", "str"],
)
def test_bad_durations(value, error, words):
    with pytest.raises(error, match=words):
        validate_seconds(value, "ttl")


def test_durations_within_bounds():
    assert validate_seconds(0, "wait") == 0.0
    assert validate_seconds(MAX_SECONDS, "wait") == MAX_SECONDS
    assert validate_seconds(datetime.timedelta(minutes=1), "delay") == 60.0
    assert validate_seconds(math.inf, "ttl", allow_forever=True) == math.inf
    with pytest.raises(InvalidArgument, match="> 0"):
        validate_seconds(0, "ttl", allow_zero=False)


@FAST
@given(any_number)
def test_a_duration_is_a_finite_bounded_float_or_refused(value):
    try:
        result = validate_seconds(value, "d")
    except (InvalidArgument, ArgumentTypeError):
        return
    assert type(result) is float and 0 <= result <= MAX_SECONDS
    assert result == value


@pytest.mark.parametrize(
    "value",
    [2**31, 2**40, -1, 10**400, 10**5000],
    ids=["2**31", "2**40", "-1", "10**400", "10**5000"],
)
def test_counts_fit_a_postgresql_integer(value):
    with pytest.raises(InvalidArgument, match=str(MAX_COUNT)):
        validate_count(value, "max_retries")


@pytest.mark.parametrize("value", [True, 1.0, "1", None])
def test_counts_are_ints(value):
    with pytest.raises(ArgumentTypeError, match="max_retries must be an int"):
        validate_count(value, "max_retries")


@FAST
@given(any_number)
def test_a_count_is_a_bounded_int_or_refused(value):
    try:
        result = validate_count(value, "n")
    except (InvalidArgument, ArgumentTypeError):
        return
    assert type(result) is int and 0 <= result <= MAX_COUNT and result == value


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (math.nan, "not JSON-serialisable"),
        ({"x": [math.inf]}, "not JSON-serialisable"),
        ("\ud800", "lone surrogate"),
        ({"k\udfff": 1}, "lone surrogate"),
        (object(), "not JSON-serialisable"),
        (10**5000, "not JSON-serialisable"),
        ("x" * 2000, "2002 bytes, over the 1000-byte limit"),
    ],
    ids=["nan", "inf", "surrogate", "surrogate-key", "object", "huge-int", "size"],
)
def test_payloads_that_are_refused(payload, words):
    with pytest.raises(MessageEncodeError, match=words):
        encode_json(payload, 1000)


def test_nesting_is_bounded_without_recursion_error():
    """5,000 levels raise MessageEncodeError (not RecursionError); the limit
    itself passes, one more level does not; brackets inside strings do not count."""
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(MessageEncodeError, match="levels deep"):
        encode_json(deep, 10**6)
    ok: object = 1
    for _ in range(MAX_JSON_DEPTH):
        ok = {"a": ok}
    assert json.loads(encode_json(ok, 10**6)) == ok
    with pytest.raises(MessageEncodeError, match="levels deep"):
        encode_json([ok], 10**6)
    assert encode_json("[" * 500 + '\\"{', 10**6)
    assert json_depth('["[\\"]", {"a": [1]}]') == 3


@FAST
@given(JSON)
def test_a_payload_round_trips_or_is_refused(payload):
    """Property: strict JSON text that decodes to the same value, or
    MessageEncodeError."""
    try:
        text = encode_json(payload, 100_000)
    except MessageEncodeError:
        return
    assert json.loads(text) == payload
