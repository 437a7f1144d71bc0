"""A cluster of the example project for the plugin cluster tests: ``runserver``
web nodes and a ``runworker`` on Redis (pub/sub, locks), sharing the run's SQLite
test database, driven through the example pages (``demo.cluster``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from django.conf import settings

from demo.cluster import Cluster, Node


@pytest.fixture
def example_cluster(
    transactional_db, unique_name, tmp_path
) -> Iterator[Callable[..., tuple[Cluster, list[Node]]]]:
    """``example_cluster(webs=2, worker=False, redis_url=None)`` -> (cluster,
    [node 1, node 2]); ``redis_url`` defaults to the suite's shared Redis.

    Depends on ``transactional_db`` so the children stop before the tables are
    flushed.
    """
    clusters: list[Cluster] = []

    def start(
        webs: int = 2, worker: bool = False, redis_url: str | None = None
    ) -> tuple[Cluster, list[Node]]:
        cluster = Cluster(
            {
                "DJANGO_SETTINGS_MODULE": "demo.settings",
                "DEMO_DB": settings.SQLITE_PATH,
                "DEMO_REDIS_URL": redis_url or settings.REDIS_URL,
                "DEMO_APP_NAME": unique_name,
                "DEMO_KEY_PREFIX": settings.KEY_PREFIX,
            },
            tmp_path,
        )
        clusters.append(cluster)
        nodes = [cluster.web(f"node{i + 1}") for i in range(webs)]
        if worker:
            cluster.worker()
        cluster.wait_ready(nodes)
        return cluster, nodes

    try:
        yield start
    finally:
        for cluster in clusters:
            cluster.stop()
