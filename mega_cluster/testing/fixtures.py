"""Fixtures of the testing kit (registered by :mod:`.pytest_plugin` under
pytest-django)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .cluster import Cluster


@pytest.fixture
def cluster(transactional_db: None) -> Iterator[Cluster]:
    """An in-process cluster of the project's plugins: ``a, b = cluster(2)``.

    The test becomes transactional (commits are real, so sync messages go out
    after commit as in production). Every node is stopped at teardown, with
    every thread the cluster started. See docs/testing.md.
    """
    kit = Cluster()
    try:
        yield kit
    finally:
        kit.stop()
