"""The example plugins' tests: two nodes in this process come from the testing
kit's ``cluster`` fixture (mega_cluster.testing, docs/testing.md); several real
processes from ``example_cluster`` (``cluster.py``)."""

from __future__ import annotations

from mega_cluster.testing import wait_until  # noqa: F401 - re-exported
