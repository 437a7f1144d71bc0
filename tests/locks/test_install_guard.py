"""The plugin install-once guard holds a cluster lock around the claim."""

from __future__ import annotations

import pytest
from django.conf import settings

from mega_cluster import Plugin
from mega_cluster.exceptions import LockTimeout
from mega_cluster.models import PluginState
from mega_cluster.plugins.install import install_once
from mega_cluster.testing import make_app


@pytest.fixture
def redis_app(unique_name):
    locks = {"BACKEND": "redis", "OPTIONS": {"URL": settings.REDIS_URL}}
    app = make_app(unique_name, {"LOCKS": locks})
    yield app
    app.stop()


def with_plugin(app, cls):
    plugin = cls(app)
    app.plugins = {plugin.name: plugin}
    PluginState.objects.create(app_name=app.name, name=plugin.name)
    return plugin


@pytest.mark.redis
@pytest.mark.django_db
def test_install_runs_while_holding_the_install_lock(redis_app):
    """install() runs with mega_cluster.install.<plugin> held by this node."""
    seen = []

    class Guarded(Plugin):
        name = "guarded"

        def install(self):
            seen.extend((i.key, i.holder) for i in self.app.lock_manager.list_locks())

    assert install_once(with_plugin(redis_app, Guarded)) is True
    assert seen == [("mega_cluster.install.guarded", redis_app.node_id)]
    assert redis_app.lock_manager.list_locks() == []
    assert PluginState.objects.get(app_name=redis_app.name, name="guarded").installed


@pytest.mark.redis
@pytest.mark.django_db
def test_install_waits_for_the_node_holding_the_install_lock(redis_app, unique_name):
    """While another node holds the install lock, this node neither claims nor
    installs; it gives up with LockTimeout after claim_timeout."""
    calls = []

    class Waiting(Plugin):
        name = "waiting"

        def install(self):
            calls.append("install")

    plugin = with_plugin(redis_app, Waiting)
    other = make_app(unique_name, {"LOCKS": redis_app.settings.raw["LOCKS"]})
    try:
        held = other.lock_manager.acquire("mega_cluster.install.waiting", ttl=10)
        with pytest.raises(LockTimeout):
            install_once(plugin, claim_timeout=0.2)
        state = PluginState.objects.get(app_name=redis_app.name, name="waiting")
        assert calls == [] and not state.installed and not state.install_claimed_by
        held.release()
        assert install_once(plugin) is True
        assert calls == ["install"]
    finally:
        other.stop()
