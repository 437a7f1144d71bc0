"""auth_policy across real processes: an edit on node 1 reaches node 2's cache
(its own process-local store) within 1 s."""

from __future__ import annotations

import time

import pytest

from demo.cluster import wait_until
from tests.plugins.cluster import example_cluster  # noqa: F401 - fixture

pytestmark = [pytest.mark.cluster, pytest.mark.redis]


def test_policy_edit_on_node_1_is_seen_on_node_2_within_1s(example_cluster):  # noqa: F811
    _, (one, two) = example_cluster()
    before = two.get("/auth-policy/")
    assert before["policy"]["token_expires_in"] == 86400  # now cached on node 2
    assert one.get("/auth-policy/")["node"] != before["node"]
    code, saved = one.post("/auth-policy/", token_expires_in=1800)
    assert code == 200, saved
    started = time.monotonic()
    wait_until(
        lambda: two.get("/auth-policy/")["policy"]["token_expires_in"] == 1800,
        1.0,
        "the new policy on node 2",
    )
    assert time.monotonic() - started < 1.0
    code, error = two.post("/auth-policy/", token_expires_in="soon")
    assert code == 400 and "must be a number" in error["error"]
