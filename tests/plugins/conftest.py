"""Two nodes of one cluster app in this process, each with its own plugin instance.

The memory pub/sub backend is shared by every app of the process and local locks
by every app of the same name, so apps built with different node ids behave as
nodes of one cluster (see docs/pubsub.md, "Testing with several nodes").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.apps import apps as django_apps

from mega_cluster.testing import (
    make_app,
    wait_until,  # noqa: F401 - re-exported
)

QUEUE = {"BACKEND": "database", "POLL_INTERVAL": 0.05, "RETRY_BASE": 0.05}


@pytest.fixture
def nodes(unique_name) -> Iterator[Callable[..., list[Any]]]:
    """``nodes(PluginClass, label, a={...}, b={...})`` -> [plugin on node-a, on node-b].

    ``a``/``b`` are extra app settings per node; both nodes are started.
    """
    made = []

    def build(cls: type, label: str, a: dict | None = None, b: dict | None = None):
        plugins = []
        for node_id, extra in (("node-a", a), ("node-b", b)):
            settings = {"PUBSUB": {"BACKEND": "memory"}, "EVENT_QUEUE": dict(QUEUE)}
            for key, value in (extra or {}).items():
                if isinstance(value, dict) and isinstance(settings.get(key), dict):
                    value = {**settings[key], **value}
                settings[key] = value
            app = make_app(unique_name, settings, node_id=node_id)
            made.append(app)
            plugin = cls(app, django_apps.get_app_config(label))
            app.plugins = {plugin.name: plugin}
            app.start()
            plugins.append(plugin)
        return plugins

    yield build
    for app in reversed(made):
        app.stop()
