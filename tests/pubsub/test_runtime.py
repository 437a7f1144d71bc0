"""The listener runtime: one loop thread per process, a task in a running loop,
fork safety, configuration errors."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest
from django.test import override_settings

from mega_cluster.exceptions import ConfigurationError
from mega_cluster.pubsub import runtime
from mega_cluster.testing import make_app

from .helpers import Recorder, wait_for


@pytest.fixture
def nodes(unique_name):
    apps = []

    def factory(node_id):
        app = make_app(
            unique_name,
            {"PUBSUB": {"BACKEND": "memory"}},
            node_id=f"{unique_name}-{node_id}",
        )
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.stop()


def _loop_threads():
    return [t for t in threading.enumerate() if t.name == "mega_cluster-pubsub-loop"]


def test_one_loop_thread_per_process_and_no_thread_per_publish(nodes):
    """Every manager of the process shares one loop thread; sync publish starts no
    thread of its own."""
    a, b = nodes("a"), nodes("b")
    seen = Recorder()
    b.pubsub_manager.subscribe("news", seen)
    a.pubsub_manager.start()
    assert a.pubsub_manager._loop is b.pubsub_manager._loop is runtime.background_loop()
    assert len(_loop_threads()) == 1
    threads = threading.active_count()
    for i in range(200):
        a.pubsub_manager.publish("news", i)
    assert seen.wait(200) == list(range(200))
    assert threading.active_count() == threads
    assert a.pubsub_manager._loop is runtime.background_loop()


@pytest.fixture
def loop_spy(monkeypatch):
    """Counts event loops created and ``asyncio.run`` calls while it is active."""
    created, runs = [], []
    init = asyncio.BaseEventLoop.__init__
    run = asyncio.run

    def spy_init(self, *args, **kwargs):
        created.append(threading.current_thread().name)
        init(self, *args, **kwargs)

    def spy_run(*args, **kwargs):
        runs.append(threading.current_thread().name)
        return run(*args, **kwargs)

    def install():
        # every stdlib loop (selector, proactor) runs BaseEventLoop.__init__
        monkeypatch.setattr(asyncio.BaseEventLoop, "__init__", spy_init)
        monkeypatch.setattr(asyncio, "run", spy_run)
        monkeypatch.setattr(asyncio.runners, "run", spy_run)
        return created, runs

    return install


def test_sync_publish_creates_no_event_loop(make_node, loop_spy):
    """N sync publishes (and their deliveries) on every backend create no event
    loop and call no asyncio.run: they use the process's one pub/sub loop."""
    a, b = make_node("a"), make_node("b")
    seen = Recorder()
    b.pubsub_manager.subscribe("news", seen)
    a.pubsub_manager.publish("news", -1)  # connected, first-use work done
    assert seen.wait(1) == [-1]
    created, runs = loop_spy()
    for i in range(50):
        a.pubsub_manager.publish("news", i)
    assert seen.wait(51, timeout=10) == [-1, *range(50)]
    assert created == [] and runs == []
    assert a.pubsub_manager._loop is runtime.background_loop()


def test_astart_in_a_running_loop_uses_that_loop(nodes):
    """Started with astart() from the main thread's running loop (ASGI), the
    listener is a task of that loop and async handlers run there."""
    a, b = nodes("a"), nodes("b")
    seen = Recorder()
    loops = []

    async def handler(payload):
        loops.append(asyncio.get_running_loop())
        seen(payload)

    async def scenario():
        manager = b.pubsub_manager
        await manager.astart()
        running = asyncio.get_running_loop()
        assert manager._loop is running
        assert manager.backend._task.get_loop() is running
        await manager.asubscribe("news", handler)
        with pytest.raises(RuntimeError, match="async twin"):
            manager.subscribe("other", print)
        await a.pubsub_manager.apublish("news", "hello")
        for _ in range(200):
            if seen.items:
                break
            await asyncio.sleep(0.01)
        await manager.astop()
        return running

    assert threading.current_thread() is threading.main_thread()
    running = asyncio.run(scenario())
    assert seen.items == ["hello"]
    assert loops == [running]


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
def test_forked_child_builds_its_own_runtime(nodes):
    """After fork the child drops the parent's loop thread and hub and works on
    its own (gunicorn --preload)."""
    a = nodes("a")
    a.pubsub_manager.start()
    parent_loop = runtime.background_loop()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            assert runtime._loop is None
            child_a = make_app("forked", {}, node_id="child-a")
            child_b = make_app("forked", {}, node_id="child-b")
            got = []
            child_b.pubsub_manager.subscribe("x", got.append)
            child_a.pubsub_manager.publish("x", 1)
            ok = wait_for(lambda: got == [1], 10)
            assert runtime.background_loop() is not parent_loop
            code = 0 if ok else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("forked child did not finish")
        time.sleep(0.05)
    assert os.WEXITSTATUS(status) == 0


def test_missing_channel_layer_is_a_configuration_error(unique_name):
    """The channels backend without CHANNEL_LAYERS raises ImproperlyConfigured."""
    with override_settings(CHANNEL_LAYERS={}):
        with pytest.raises(ConfigurationError, match="CHANNEL_LAYERS has no layer"):
            make_app(unique_name, {"PUBSUB": {"BACKEND": "channels"}}).component(
                "pubsub_manager"
            )


def test_missing_url_is_a_configuration_error(unique_name):
    """redis and nats without OPTIONS['URL'] raise ImproperlyConfigured."""
    for backend in ("redis", "nats"):
        app = make_app(unique_name, {"PUBSUB": {"BACKEND": backend}})
        with pytest.raises(ConfigurationError, match="URL"):
            app.component("pubsub_manager")
