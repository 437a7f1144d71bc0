"""Cache names, keys, TTLs and deltas checked at the call on every store."""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from mega_cluster.cache import FOREVER
from mega_cluster.exceptions import ArgumentTypeError, InvalidArgument, InvalidName

DOCUMENTED = (InvalidName, InvalidArgument, ArgumentTypeError)
PROPERTY = hsettings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
MISS = object()


def test_names_with_a_trailing_newline_fail_on_every_call(make_cluster_app, cache):
    app = make_cluster_app()
    for bad in ("x\n", "a" * 200 + "\n"):
        with pytest.raises(InvalidName, match="trailing newline"):
            app.cache_manager.create_cache(bad)
        with pytest.raises(InvalidName):
            app.cache_manager.create_cache("fine", prefix=bad)
        for call in (
            lambda bad=bad: cache.get(bad),
            lambda bad=bad: cache.set(bad, 1),
            lambda bad=bad: cache.delete(bad),
            lambda bad=bad: cache.mget(["ok", bad]),
            lambda bad=bad: cache.mset({bad: 1}),
            lambda bad=bad: cache.mdel([bad]),
            lambda bad=bad: cache.ttl(bad),
            lambda bad=bad: cache.incr(bad),
            lambda bad=bad: cache.wrap(bad, lambda: 1),
            lambda bad=bad: asyncio.run(cache.aset(bad, 1)),
        ):
            with pytest.raises(InvalidName):
                call()
    assert "fine" not in app.cache_manager


@pytest.mark.parametrize("bad", [math.nan, 1e300, 10**400, -math.inf, -1])
def test_bad_ttls_fail_at_the_call(cache, bad):
    """FOREVER (math.inf) is the only infinite TTL; NaN or 1e300 used to reach
    the store."""
    with pytest.raises(InvalidArgument, match="ttl"):
        cache.set("k", 1, ttl=bad)
    with pytest.raises(InvalidArgument, match="ttl"):
        cache.wrap("k", lambda: 1, ttl=bad)
    assert cache.get("k", MISS) is MISS
    cache.set("k", 1, ttl=FOREVER)
    assert cache.get("k") == 1


def test_incr_delta_stays_exact_on_every_store(cache):
    """The Redis stores add in Lua (doubles): 2**63 - 1 came back as -2**63."""
    for bad in (2**53, -(2**53), 2**63):
        with pytest.raises(InvalidArgument, match="delta"):
            cache.incr("n", bad)
    assert cache.incr("n", 2**53 - 1) == 2**53 - 1
    assert cache.incr("n", -(2**53 - 1)) == 0


@pytest.mark.timeout(300)
@PROPERTY
@given(
    key=st.one_of(
        st.from_regex(r"[A-Za-z0-9_.:\-]{1,200}", fullmatch=True),
        st.text(st.characters(codec=None, categories=None), max_size=20),
    ),
    ttl=st.one_of(
        st.none(),
        st.floats(),
        st.integers(min_value=-5, max_value=10**10),
        st.sampled_from([FOREVER, True, "5", 10**400]),
    ),
    value=st.one_of(st.none(), st.integers(), st.text(), st.binary()),
)
def test_any_set_round_trips_or_fails_at_the_call(cache, key, ttl, value):
    """Property: set then get returns the value (TTLs of at least a second), or
    the call raises a documented error and nothing is stored."""
    try:
        cache.set(key, value, ttl=ttl)
    except DOCUMENTED:
        try:
            assert cache.get(key, MISS) is MISS
        except InvalidName:
            pass
    else:
        if ttl is None or ttl >= 1:
            assert cache.get(key, MISS) == value
        cache.delete(key)
    cache.set("probe", 1)
    assert cache.get("probe") == 1
