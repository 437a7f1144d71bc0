"""Fixtures of the pub/sub contract suite: one parameter per backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import override_settings

from mega_cluster.registry import ClusterApp
from mega_cluster.testing import make_app

from .helpers import CHANNEL_LAYERS, pubsub_settings

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("redis-sentinel", id="redis-sentinel", marks=pytest.mark.redis),
    pytest.param("redis-cluster", id="redis-cluster", marks=pytest.mark.redis),
    pytest.param("nats", id="nats", marks=pytest.mark.nats),
    pytest.param("channels", id="channels", marks=pytest.mark.redis),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every pub/sub backend, on the shared servers of the run."""
    if request.param == "channels":
        with override_settings(CHANNEL_LAYERS=CHANNEL_LAYERS):
            yield request.param
    elif request.param == "redis-sentinel":
        topology = request.getfixturevalue("sentinel_topology")
        with override_settings(MC_SENTINEL_URL=topology.url):
            yield request.param
    elif request.param == "redis-cluster":
        topology = request.getfixturevalue("cluster_topology")
        with override_settings(MC_CLUSTER_URL=topology.url):
            yield request.param
    else:
        yield request.param


NodeFactory = Callable[..., ClusterApp]


@pytest.fixture
def make_node(backend: str, unique_name: str) -> Iterator[NodeFactory]:
    """Build cluster apps ("nodes") on ``backend``; all stopped at teardown.

    ``make_node("a")`` gives node id ``a`` in the test's app; ``app=`` picks another
    app name (for isolation tests), ``**extra`` adds PUBSUB keys.
    """
    apps: list[ClusterApp] = []

    def factory(node_id: str, *, app: str | None = None, **extra: Any) -> ClusterApp:
        cluster_app = make_app(
            app or unique_name,
            {"PUBSUB": pubsub_settings(backend, **extra)},
            node_id=f"{unique_name}-{node_id}",
        )
        apps.append(cluster_app)
        return cluster_app

    yield factory
    for cluster_app in apps:
        cluster_app.stop()
