"""The cluster app registry: lookup errors, isolation by name, node identity."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.conf import settings

from mega_cluster import AmbiguousApp, AppNotFound, get_app, node
from mega_cluster.registry import ClusterApp, registry
from mega_cluster.testing import cluster_settings, make_app
from tests.procs import ROOT, child_env


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter with the suite's settings; its stdout."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


def test_get_app_before_django_setup_raises_app_not_ready():
    """get_app() in a process where Django is not set up raises AppNotReady."""
    code = (
        "from mega_cluster import get_app, AppNotReady\n"
        "try:\n    get_app()\nexcept AppNotReady as exc:\n    print('NOT READY:', exc)\n"
    )
    out = run_python(code)
    assert out.startswith("NOT READY: mega_cluster apps are not ready")


def test_single_app_is_returned_without_a_name():
    app = get_app()
    assert isinstance(app, ClusterApp)
    assert app.name == settings.MEGA_CLUSTER["APP_NAME"]
    assert get_app(app.name) is app


def test_unknown_name_raises_app_not_found():
    with pytest.raises(AppNotFound, match="nope"):
        get_app("nope")


def test_several_apps_need_a_name():
    """With several apps get_app() raises AmbiguousApp; names pick each one."""
    with cluster_settings({"APPS": {"web": {}, "admin": {}}}):
        with pytest.raises(AmbiguousApp, match="web, admin"):
            get_app()
        assert get_app("web").name == "web"
        assert get_app("admin").name == "admin"
        assert get_app("web") is not get_app("admin")


@pytest.mark.django_db(transaction=True)
def test_two_apps_do_not_share_plugins_or_plugin_state():
    """Each app has its own plugin instances and its own stored enabled flag."""
    with cluster_settings({"APPS": {"web": {}, "admin": {}}}):
        web, admin = get_app("web"), get_app("admin")
        web.start()
        admin.start()
        assert web.plugins["site_notice"] is not admin.plugins["site_notice"]
        assert web.plugins["site_notice"].app is web
        web.disable_plugin("site_notice")
        assert not web.plugins["site_notice"].enabled
        assert admin.plugins["site_notice"].enabled
        from mega_cluster.models import PluginState

        flags = dict(
            PluginState.objects.filter(name="site_notice").values_list(
                "app_name", "enabled"
            )
        )
        assert flags == {"web": False, "admin": True}


def test_plugins_lists_restrict_apps():
    with cluster_settings(
        {"APPS": {"web": {"PLUGINS": ["site_notice"]}, "bare": {"PLUGINS": []}}}
    ):
        assert list(get_app("web").plugins) == ["site_notice"]
        assert get_app("bare").plugins == {}


def test_plugins_list_with_unknown_label_is_an_error():
    from mega_cluster.exceptions import PluginError

    with cluster_settings({"APPS": {"web": {"PLUGINS": ["nope"]}}}):
        with pytest.raises(PluginError, match="nope"):
            get_app("web")


def test_node_id_is_renewed_in_a_forked_child():
    """A forked child has a new node id and none of the parent's managers."""
    app = make_app("forky")
    app._components["marker"] = object()
    parent_id = node.get_node_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(read)
            reg_clean = all(not a.built_components() for a in registry.apps().values())
            line = f"{node.get_node_id()}|{app.node_id}|{reg_clean}"
            os.write(write, line.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    child_id, child_app_id, reg_clean = data.split("|")
    assert child_id != parent_id
    assert child_app_id == child_id
    assert reg_clean == "True"
    assert str(os.getpid()) in parent_id
    assert node.get_node_id() == parent_id


def test_node_ids_differ_between_processes():
    code = (
        "import django; django.setup()\n"
        "from mega_cluster import get_app\nprint(get_app().node_id)\n"
    )
    ids = {run_python(code).strip() for _ in range(2)}
    assert len(ids) == 2 and node.get_node_id() not in ids


def test_setup_builds_no_manager_and_starts_no_thread():
    """django.setup() (AppConfig.ready) connects nothing: no manager, no thread."""
    code = (
        "import threading, django; django.setup()\n"
        "from mega_cluster.registry import registry\n"
        "apps = registry.apps().values()\n"
        "print(sum(len(a.built_components()) for a in apps), threading.active_count())\n"
    )
    out = run_python(code).split()
    assert out == ["0", "1"]


@pytest.mark.django_db(transaction=True)
def test_manager_built_after_start_is_started(unique_name):
    """A manager first used after app.start() is started like the others."""
    app = make_app(unique_name)
    app.plugins = {}
    try:
        app.start()
        assert "pubsub_manager" not in app.built_components()
        manager = app.pubsub_manager
        assert manager._started is True
    finally:
        app.stop()
