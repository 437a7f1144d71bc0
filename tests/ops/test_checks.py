"""System checks of the node registry's timing."""

from __future__ import annotations

from django.test import override_settings

from mega_cluster.checks import check_settings


def ids(value):
    with override_settings(MEGA_CLUSTER=value):
        return [
            m.id
            for m in check_settings()
            if m.id in ("mega_cluster.E014", "mega_cluster.W005")
        ]


def test_timeout_not_longer_than_heartbeat_is_an_error():
    """NODE_TIMEOUT <= NODE_HEARTBEAT would show every node dead: E014."""
    assert ids({"NODE_HEARTBEAT": 5.0, "NODE_TIMEOUT": 5.0}) == ["mega_cluster.E014"]


def test_timeout_under_two_heartbeats_is_a_warning():
    """One late beat would show a live node dead: W005."""
    assert ids({"NODE_HEARTBEAT": 5.0, "NODE_TIMEOUT": 8.0}) == ["mega_cluster.W005"]


def test_defaults_and_apps_are_checked_each():
    """The defaults pass; in APPS each app is checked on its own values."""
    assert ids(None) == []
    value = {"APPS": {"a": {}, "b": {"NODE_HEARTBEAT": 10.0, "NODE_TIMEOUT": 10.0}}}
    assert ids(value) == ["mega_cluster.E014"]
