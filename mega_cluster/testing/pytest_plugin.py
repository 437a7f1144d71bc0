"""The testing kit's pytest plugin, registered through the ``pytest11`` entry point.

Installed with mega_cluster, it loads in every pytest run but adds its fixtures
only when pytest-django is active: ``-p no:django``, or a project without
pytest-django, leaves it inert (no fixture, so no clash with a ``cluster``
fixture of the project's own; importing it connects to nothing and needs no
settings). The fixtures are in :mod:`mega_cluster.testing.fixtures`; the guide
is docs/testing.md.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.hasplugin("django"):
        return
    from . import fixtures

    if not config.pluginmanager.is_registered(fixtures):
        config.pluginmanager.register(fixtures, "mega_cluster.testing.fixtures")
