"""Plugin install() runs once per cluster when several real nodes boot together."""

from __future__ import annotations

import time

import pytest

from mega_cluster.models import PluginState

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]


@pytest.mark.django_db(databases=["postgres"], transaction=True)
def test_four_nodes_booting_together_install_exactly_once(procs, unique_name, tmp_path):
    """Four processes start the same app on a fresh PostgreSQL database: one install."""
    log = tmp_path / "installs.log"
    log.touch()
    env = {
        "MC_CHILD_SETTINGS": "tests.cluster.install_settings",
        "MC_APP_NAME": unique_name,
        "MC_INSTALL_LOG": str(log),
        "MC_START_AT": str(time.time() + 4.0),
    }
    for _ in range(4):
        procs.spawn(["tests/cluster/install_child.py"], env)
    results = procs.wait_all(timeout=90)
    for code, out, err in results:
        assert code == 0, err[-2000:]
        assert out.startswith("started")
    installers = log.read_text().splitlines()
    assert len(installers) == 1, installers
    state = PluginState.objects.using("postgres").get(
        app_name=unique_name, name="counter"
    )
    assert state.installed and state.version == "1.0.0"
    assert state.install_claimed_by == installers[0]
    nodes = {out.split()[1] for _, out, _ in results}
    assert len(nodes) == 4 and installers[0] in nodes
