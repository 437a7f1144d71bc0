"""One lock manager fixture per backend; the contract suite runs on each."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings

from mega_cluster.locks import LockManager
from mega_cluster.testing import make_app
from tests.databases import ON_POSTGRES

BACKENDS = [
    pytest.param("local", id="local"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("redis-sentinel", id="redis-sentinel", marks=pytest.mark.redis),
    pytest.param("redis-cluster", id="redis-cluster", marks=pytest.mark.redis),
    pytest.param(
        "database-sqlite",
        id="database-sqlite",
        marks=pytest.mark.django_db(transaction=True),
    ),
    pytest.param(
        "database-postgres",
        id="database-postgres",
        marks=ON_POSTGRES,
    ),
    pytest.param("database-pgbouncer", id="database-pgbouncer", marks=ON_POSTGRES),
]


def locks_settings(kind: str, url: str | None = None) -> dict[str, Any]:
    """The ``LOCKS`` section of a cluster app for one backend of the suite
    (``url``: where the topology of a ``redis-*`` kind runs)."""
    if kind == "local":
        return {"BACKEND": "local"}
    if kind.startswith("redis"):
        options = {"URL": url or settings.REDIS_URL}
        if kind == "redis-cluster":
            options["CLUSTER"] = True
        return {"BACKEND": "redis", "OPTIONS": options}
    if kind == "database-pgbouncer":  # LISTEN needs a direct connection
        options = {"DATABASE": "pgbouncer", "LISTEN_DATABASE": "postgres"}
        return {"BACKEND": "database", "OPTIONS": options}
    alias = "postgres" if kind == "database-postgres" else "default"
    return {"BACKEND": "database", "OPTIONS": {"DATABASE": alias}}


@pytest.fixture(params=BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def backend_url(request: pytest.FixtureRequest, backend_kind: str) -> str | None:
    """The URL of the private topology a ``redis-*`` kind runs on."""
    if backend_kind == "redis-sentinel":
        return request.getfixturevalue("sentinel_topology").url
    if backend_kind == "redis-cluster":
        return request.getfixturevalue("cluster_topology").url
    if backend_kind == "database-pgbouncer":
        request.getfixturevalue("pgbouncer_alias")
    return None


@pytest.fixture
def make_manager(
    backend_kind: str, backend_url: str | None, unique_name: str
) -> Iterator[Callable[..., LockManager]]:
    """Build lock managers of one backend; same ``name`` = same namespace (a node)."""
    apps = []

    def build(name: str | None = None, **locks: Any) -> LockManager:
        section = locks_settings(backend_kind, backend_url)
        app = make_app(name or unique_name, {"LOCKS": {**section, **locks}})
        apps.append(app)
        if backend_kind == "redis-cluster":
            # Open the cluster client's connection here, not inside a test's
            # sub-second lease (a full run on 2 cores lapsed one once).
            app.lock_manager.list_locks()
        return app.lock_manager

    yield build
    for app in apps:
        app.stop()


@pytest.fixture
def manager(make_manager: Callable[..., LockManager]) -> LockManager:
    return make_manager()


@pytest.fixture
def other(make_manager: Callable[..., LockManager]) -> LockManager:
    """A second manager of the same app: another node as far as locks go."""
    return make_manager()
