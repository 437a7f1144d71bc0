"""Fixtures of the ``mega_cluster.tasks`` contract suite: a cluster app on each
event-queue transport with a ``TASKS`` backend on it. Skipped without
``django.tasks`` (Django < 6.0)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings

from mega_cluster.registry import ClusterApp, registry
from mega_cluster.testing import cluster_settings
from tests.events.conftest import BACKENDS, queue_settings


def tasks_setting(**options: Any) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": "mega_cluster.tasks.ClusterTaskBackend",
            "QUEUES": ["default", "other"],
            "OPTIONS": options,
        }
    }


if importlib.util.find_spec("django.tasks") is not None:
    # The Task objects are built at import, against the backend then configured.
    with override_settings(TASKS=tasks_setting()):
        from . import jobs  # noqa: F401
else:
    # Django < 6.0 has no django.tasks: the suite's modules cannot even import.
    collect_ignore_glob = ["*.py"]


class TasksApp:
    def __init__(self, app: ClusterApp, backend: str, database: str | None) -> None:
        self.app = app
        self.transport = backend
        self.database = database

    @property
    def alias(self) -> str:
        return self.app.event_queue.backend.transaction_alias()


@pytest.fixture(params=BACKENDS)
def tasks_app(
    request: pytest.FixtureRequest, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TasksApp]:
    """The only cluster app, on the transport under test, started and consuming,
    with ``TASKS["default"]`` on it (queues ``default`` and ``other``)."""
    backend, database = request.param
    marker = request.node.get_closest_marker("event_queue")
    section = queue_settings(backend, database, **(marker.kwargs if marker else {}))
    monkeypatch.setenv("MC_TASKS_TEST_ALIAS", database or "default")
    with (
        cluster_settings({"APP_NAME": unique_name, **section}),
        override_settings(TASKS=tasks_setting()),
    ):
        app = registry.get()
        app.event_queue.configure_worker()
        app.start()
        try:
            yield TasksApp(app, backend, database)
        finally:
            app.stop()
