"""Plugins: discovery, dependency order, lifecycle, install once, enable/disable."""

from __future__ import annotations

import pytest
from django.apps import AppConfig

from mega_cluster import Plugin
from mega_cluster.exceptions import PluginError
from mega_cluster.models import PluginState
from mega_cluster.plugins import enabling
from mega_cluster.plugins.loader import discover, order
from mega_cluster.testing import make_app
from tests.factories import PluginStateFactory
from tests.plugin_apps import recorder
from tests.plugin_apps.alpha.plugins import AlphaPlugin
from tests.plugin_apps.beta.plugin import BetaPlugin
from tests.plugin_apps.gamma.plugin import GammaPlugin


def configs(*names: str) -> list[AppConfig]:
    return [AppConfig.create(f"tests.plugin_apps.{n}") for n in names]


def build(app, *pairs):
    instances = {}
    for cfg, cls in pairs:
        plugin = cls(app, cfg)
        instances[plugin.name] = plugin
    app.plugins = {name: instances[name] for name in order(instances)}
    return app


@pytest.fixture
def app(unique_name):
    app = make_app(unique_name)
    recorder.CALLS.clear()
    yield app
    app.stop()


def calls(app):
    return [(p, h) for a, p, h in recorder.CALLS if a == app.name]


def test_discovery_by_appconfig_path_and_by_plugin_module():
    """AppConfig.plugin names the class; else the app's plugin.py defines one."""
    found = discover(configs("alpha", "beta", "gamma", "counter"))
    assert [(cfg.label, cls) for cfg, cls in found][:3] == [
        ("mc_alpha", AlphaPlugin),
        ("mc_beta", BetaPlugin),
        ("mc_gamma", GammaPlugin),
    ]


def test_app_without_plugin_is_not_a_plugin():
    assert discover([AppConfig.create("django.contrib.contenttypes")]) == []


def test_two_plugin_classes_in_one_module_is_an_error():
    with pytest.raises(PluginError, match="several Plugin subclasses"):
        discover(configs("twoplugins"))


def test_plugin_path_that_is_not_a_plugin_is_an_error():
    cfg = AppConfig.create("tests.plugin_apps.gamma")
    cfg.plugin = "tests.plugin_apps.recorder.CALLS"
    with pytest.raises(PluginError, match="not a subclass"):
        discover([cfg])


def test_name_defaults_to_app_label(app):
    (cfg,) = configs("gamma")
    assert GammaPlugin(app, cfg).name == "mc_gamma"


def test_dependencies_load_first(app):
    """alpha depends on beta, so beta comes first whatever the declared order."""
    build(
        app,
        *zip(configs("alpha", "gamma", "beta"), [AlphaPlugin, GammaPlugin, BetaPlugin]),
    )
    assert list(app.plugins) == ["beta", "alpha", "mc_gamma"]


def test_unknown_dependency_names_both_plugins(app):
    with pytest.raises(PluginError, match="'alpha' depends on 'beta'"):
        build(app, (configs("alpha")[0], AlphaPlugin))


def test_cycle_names_the_plugins(app):
    class A(Plugin):
        name = "a"
        dependencies = ["c"]

    class B(Plugin):
        name = "b"
        dependencies = ["a"]

    class C(Plugin):
        name = "c"
        dependencies = ["b"]

    with pytest.raises(PluginError, match=r"cycle: a -> c -> b -> a"):
        build(app, (None, A), (None, B), (None, C))


@pytest.mark.django_db(transaction=True)
def test_lifecycle_order_with_sync_and_async_hooks(app):
    """before_load for all, then load for all, then install; stop runs in reverse."""
    build(app, *zip(configs("alpha", "beta"), [AlphaPlugin, BetaPlugin]))
    app.start()
    assert calls(app) == [
        ("beta", "before_load"),
        ("alpha", "before_load"),
        ("beta", "load"),
        ("alpha", "load"),
        ("beta", "install"),
        ("alpha", "install"),
    ]
    state = PluginState.objects.get(app_name=app.name, name="beta")
    assert state.installed and state.version == "2.1.0" and state.installed_at
    recorder.CALLS.clear()
    app.stop()
    assert calls(app) == [("alpha", "before_stop"), ("beta", "before_stop")]


@pytest.mark.django_db(transaction=True)
def test_install_runs_once_then_never_again(app, unique_name):
    """A second start (another node, same database) loads but does not install."""
    build(app, (configs("beta")[0], BetaPlugin))
    app.start()
    app.stop()
    other = build(make_app(unique_name), (configs("beta")[0], BetaPlugin))
    recorder.CALLS.clear()
    other.start()
    assert [h for _, h in calls(other)] == ["before_load", "load"]
    other.stop()


@pytest.mark.django_db(transaction=True)
def test_install_error_releases_the_claim(app):
    """install() that raises leaves the plugin not installed and claimable again."""

    class Broken(Plugin):
        name = "broken"
        fail = True

        def install(self):
            if Broken.fail:
                raise RuntimeError("boom")

    build(app, (None, Broken))
    with pytest.raises(RuntimeError, match="boom"):
        app.start()
    state = PluginState.objects.get(app_name=app.name, name="broken")
    assert not state.installed and state.install_claimed_at is None
    Broken.fail = False
    app.start()
    assert PluginState.objects.get(app_name=app.name, name="broken").installed


@pytest.mark.django_db(transaction=True)
def test_stale_claim_of_a_dead_node_is_taken_over(app):
    from datetime import timedelta

    from django.utils import timezone

    build(app, (configs("beta")[0], BetaPlugin))
    PluginStateFactory(
        app_name=app.name,
        name="beta",
        install_claimed_by="dead-node",
        install_claimed_at=timezone.now() - timedelta(hours=1),
    )
    app.start()
    assert ("beta", "install") in calls(app)


@pytest.mark.django_db(transaction=True)
def test_disabled_plugin_is_not_loaded(app):
    """The enabled flag stored in the database is honoured at start."""
    build(app, *zip(configs("beta", "gamma"), [BetaPlugin, GammaPlugin]))
    PluginStateFactory(app_name=app.name, name="mc_gamma", enabled=False)
    app.start()
    assert ("mc_gamma", "load") not in calls(app)
    assert not app.plugins["mc_gamma"].loaded
    assert app.plugins["beta"].loaded


@pytest.mark.django_db(transaction=True)
def test_enable_and_disable_run_hooks_and_are_stored(app):
    build(app, *zip(configs("alpha", "beta"), [AlphaPlugin, BetaPlugin]))
    app.start()
    recorder.CALLS.clear()
    with pytest.raises(PluginError, match=r"enabled plugins \['alpha'\] depend on it"):
        app.disable_plugin("beta")
    app.disable_plugin("alpha")
    assert calls(app) == [("alpha", "after_disable")]
    assert not PluginState.objects.get(app_name=app.name, name="alpha").enabled
    recorder.CALLS.clear()
    app.enable_plugin("alpha")
    assert calls(app) == [
        ("alpha", "before_load"),
        ("alpha", "load"),
        ("alpha", "after_enable"),
    ]
    assert PluginState.objects.get(app_name=app.name, name="alpha").enabled


@pytest.mark.django_db(transaction=True)
def test_enable_needs_enabled_dependencies(app):
    build(app, *zip(configs("alpha", "beta"), [AlphaPlugin, BetaPlugin]))
    PluginStateFactory(app_name=app.name, name="alpha", enabled=False)
    PluginStateFactory(app_name=app.name, name="beta", enabled=False)
    app.start()
    with pytest.raises(PluginError, match=r"dependencies \['beta'\] are disabled"):
        app.enable_plugin("alpha")


def test_unknown_plugin_name_in_enable(app):
    with pytest.raises(PluginError, match="No plugin 'nope'"):
        enabling.set_enabled(app, "nope", True)


@pytest.mark.django_db(transaction=True)
def test_missing_tables_say_run_migrate(app):
    from django.db import connection

    from mega_cluster.exceptions import ConfigurationError

    build(app, (configs("beta")[0], BetaPlugin))
    with connection.schema_editor() as editor:
        editor.delete_model(PluginState)
    try:
        with pytest.raises(ConfigurationError, match=r"run 'manage\.py migrate'"):
            app.start()
    finally:
        with connection.schema_editor() as editor:
            editor.create_model(PluginState)
