"""Helpers for testing code that uses mega_cluster (import them in your own tests)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from django.test import override_settings

from .. import conf
from ..exceptions import ConfigurationError
from ..registry import ClusterApp, registry


def make_app(
    name: str = "test",
    settings: Mapping[str, Any] | None = None,
    *,
    node_id: str | None = None,
) -> ClusterApp:
    """A standalone :class:`ClusterApp` (not in the registry, no plugins).

    ``settings`` has the shape of one app in ``MEGA_CLUSTER``, e.g.
    ``{"LOCKS": {"BACKEND": "redis", "OPTIONS": {"URL": url}}}``. Call ``app.stop()``
    when done. Raises ``ConfigurationError`` for settings errors. ``node_id`` gives
    the app its own node id, so two apps of one process act as two nodes.
    """
    problems: list[conf.SettingsProblem] = []
    parsed = conf.parse_app(name, dict(settings or {}), problems=problems)
    errors = [p for p in problems if p.level == "error"]
    if errors:
        raise ConfigurationError("; ".join(f"{p.msg} {p.hint}" for p in errors))
    app = ClusterApp(parsed)
    if node_id is not None:
        app.node_id_override = node_id
    return app


@contextlib.contextmanager
def cluster_settings(value: Mapping[str, Any] | None) -> Iterator[None]:
    """Run the block with ``MEGA_CLUSTER = value``; apps are rebuilt and stopped after."""
    registry.reset()
    try:
        with override_settings(MEGA_CLUSTER=value):
            yield
    finally:
        registry.reset()


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    what: str = "condition",
    *,
    interval: float = 0.01,
) -> Any:
    """Poll ``predicate`` until it returns something truthy and return that.

    Raises ``AssertionError`` naming ``what`` after ``timeout`` seconds, so a test
    that waits for another node or thread is always bounded.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def __getattr__(name: str) -> Any:
    # The testing kit's Cluster, imported on first use: importing this package
    # (pytest loads it through the entry point) stays light.
    if name == "Cluster":
        from .cluster import Cluster

        return Cluster
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
