"""Plugins on sync messages: round trip between nodes, gaps, enable/disable on
every node, reconnect after a broker restart."""

from __future__ import annotations

import pytest
from django.db import transaction

from mega_cluster import Plugin
from mega_cluster.sync_messages import manager as sync_manager
from mega_cluster.testing import make_app
from tests.databases import ON_POSTGRES
from tests.pubsub.helpers import wait_for
from tests.servers import redis_server

pytestmark = pytest.mark.django_db(transaction=True)

DATABASES = [
    pytest.param("default", id="sqlite"),
    pytest.param(
        "postgres",
        id="postgres",
        marks=ON_POSTGRES,
    ),
]


@pytest.fixture(params=DATABASES)
def alias(request):
    """The database whose transactions the plugin's sync messages follow."""
    return request.param


class SyncerPlugin(Plugin):
    name = "syncer"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.messages = []
        self.gaps = 0
        self.hooks = []

    def handle_sync_message(self, message):
        self.messages.append(message)

    def handle_sync_gap(self):
        self.gaps += 1

    def after_enable(self):
        self.hooks.append("after_enable")

    def after_disable(self):
        self.hooks.append("after_disable")


class AsyncSyncerPlugin(SyncerPlugin):
    name = "asyncer"

    async def handle_sync_message(self, message):
        self.messages.append(("async", message))


def _node(name, node_id, settings=None):
    app = make_app(name, settings or {}, node_id=f"{name}-{node_id}")
    app.plugins = {
        "syncer": SyncerPlugin(app),
        "asyncer": AsyncSyncerPlugin(app),
    }
    return app.start()


@pytest.fixture
def two_nodes(unique_name):
    a, b = _node(unique_name, "a"), _node(unique_name, "b")
    yield a, b
    a.stop()
    b.stop()


def test_plugin_round_trip_between_nodes(two_nodes, alias):
    """send_sync_message on one node reaches handle_sync_message on the other only,
    sent when the block on the chosen database commits."""
    a, b = two_nodes
    with transaction.atomic(using=alias):
        a.plugins["syncer"].send_sync_message({"reload": "schema"}, transaction=alias)
        a.plugins["asyncer"].send_sync_message(1, transaction=alias)
    assert wait_for(lambda: b.plugins["asyncer"].messages == [("async", 1)])
    assert b.plugins["syncer"].messages == [{"reload": "schema"}]
    assert a.plugins["syncer"].messages == []
    assert a.plugins["asyncer"].messages == []


def test_plugin_send_inside_atomic_waits_for_commit(two_nodes, alias):
    """Plugin.send_sync_message inside atomic() sends after commit; a rolled-back
    block sends nothing."""
    a, b = two_nodes
    with pytest.raises(RuntimeError), transaction.atomic(using=alias):
        a.plugins["syncer"].send_sync_message("lost", transaction=alias)
        raise RuntimeError("rollback")
    with transaction.atomic(using=alias):
        a.plugins["syncer"].send_sync_message("late", transaction=alias)
        a.plugins["asyncer"].send_sync_message("now", transaction=False)
        assert wait_for(lambda: b.plugins["asyncer"].messages == [("async", "now")])
        assert b.plugins["syncer"].messages == []
    assert wait_for(lambda: b.plugins["syncer"].messages == ["late"])


class FailingPlugin(Plugin):
    name = "failing"

    def handle_sync_message(self, message):
        raise ValueError(f"cannot apply {message!r}")


def test_a_failing_handler_is_logged_under_the_plugins_method(unique_name, caplog):
    """A handle_sync_message that raises is logged as ``Class.handle_sync_message``
    with the plugin name, not as the internal wrapper (it was
    ``functools.partial(<function _deliver ...>)``)."""
    nodes = []
    for node_id in ("a", "b"):
        app = make_app(unique_name, {}, node_id=f"{unique_name}-{node_id}")
        app.plugins = {"failing": FailingPlugin(app)}
        nodes.append(app.start())
    a, b = nodes
    try:
        with caplog.at_level("ERROR", logger="mega_cluster.sync_messages"):
            a.plugins["failing"].send_sync_message("x", transaction=False)
            assert wait_for(lambda: any(r.exc_info for r in caplog.records))
        record = next(r for r in caplog.records if r.exc_info)
        message = record.getMessage()
        assert message.startswith(
            "sync message handler FailingPlugin.handle_sync_message "
            "(plugin 'failing') failed on channel"
        ), message
        assert "partial" not in message and "_deliver" not in message
        assert f"node {b.node_id}" in message
    finally:
        a.stop()
        b.stop()


@pytest.fixture
def lose_sends(monkeypatch):
    """``lose(n)``: the next ``n`` sends after commit die before the broker (as a
    sender killed between its commit and its send)."""
    left = [0]

    def hook():
        if left[0] > 0:
            left[0] -= 1
            raise RuntimeError("killed between commit and send (test)")

    monkeypatch.setattr(sync_manager, "AFTER_COMMIT_HOOK", hook)

    def lose(n=1):
        left[0] = n

    return lose


def test_a_missed_message_is_replayed_and_only_a_pruned_one_is_a_gap(
    two_nodes, alias, lose_sends
):
    """A message whose send died after commit is replayed from the outbox when the
    next number arrives (before it, no gap hook); a rolled-back message takes no
    number; a missed message whose row the retention pruned calls
    handle_sync_gap()."""
    from mega_cluster.models import OutboxMessage

    a, b = two_nodes
    plugin = a.plugins["syncer"]
    with transaction.atomic(using=alias):
        plugin.send_sync_message(1, transaction=alias)
    with pytest.raises(RuntimeError), transaction.atomic(using=alias):
        plugin.send_sync_message("rolled back", transaction=alias)
        raise RuntimeError("rollback")
    lose_sends(1)
    with transaction.atomic(using=alias):
        plugin.send_sync_message(2, transaction=alias)
    with transaction.atomic(using=alias):
        plugin.send_sync_message(3, transaction=alias)
    assert wait_for(lambda: b.plugins["syncer"].messages == [1, 2, 3])
    assert b.plugins["syncer"].gaps == 0
    assert b.outbox.replays == 1

    lose_sends(1)
    with transaction.atomic(using=alias):
        plugin.send_sync_message(4, transaction=alias)
    OutboxMessage.objects.using(alias).filter(
        app_name=a.name, channel=plugin.sync_channel, seq=4
    ).delete()  # what RETENTION does to old rows
    with transaction.atomic(using=alias):
        plugin.send_sync_message(5, transaction=alias)
    assert wait_for(lambda: b.plugins["syncer"].messages == [1, 2, 3, 5])
    assert b.plugins["syncer"].gaps == 1
    assert b.plugins["asyncer"].gaps == 0


def test_disable_and_enable_apply_on_every_node(two_nodes):
    """disable_plugin/enable_plugin on one node run the hooks on the other too."""
    a, b = two_nodes
    a.disable_plugin("syncer")
    assert wait_for(lambda: b.plugins["syncer"].hooks == ["after_disable"])
    assert b.plugins["syncer"].enabled is False
    assert a.plugins["syncer"].hooks == ["after_disable"]

    # a disabled plugin does not get sync messages
    a.plugins["syncer"].send_sync_message("ignored")
    a.plugins["asyncer"].send_sync_message("sentinel")
    assert wait_for(lambda: b.plugins["asyncer"].messages == [("async", "sentinel")])
    assert b.plugins["syncer"].messages == []

    a.enable_plugin("syncer")
    assert wait_for(
        lambda: b.plugins["syncer"].hooks == ["after_disable", "after_enable"]
    )
    assert b.plugins["syncer"].enabled is True


def test_gap_on_the_enable_channel_reloads_flags_from_the_database(two_nodes):
    """A node that missed an enable/disable message applies the stored flags."""
    from mega_cluster.models import PluginState

    _a, b = two_nodes
    PluginState.objects.filter(app_name=b.name, name="syncer").update(enabled=False)
    b.sync_message_manager._gap("~plugins", "test")
    assert b.plugins["syncer"].enabled is False
    assert b.plugins["syncer"].hooks == ["after_disable"]


@pytest.mark.redis
def test_messages_committed_while_the_broker_is_down_are_replayed(unique_name):
    """A sync message committed while Redis is down is not lost: after the
    restart the receiver replays it from the outbox (no handle_sync_gap), and
    messages flow again."""
    with redis_server() as server:
        settings = {
            "PUBSUB": {
                "BACKEND": "redis",
                "OPTIONS": {"URL": f"redis://127.0.0.1:{server.port}/0"},
                "RECONNECT_MAX_DELAY": 0.5,
            }
        }
        a, b = _node(unique_name, "a", settings), _node(unique_name, "b", settings)
        try:
            server.stop()
            with transaction.atomic():
                a.plugins["syncer"].send_sync_message("during")
            server.start()
            assert wait_for(lambda: b.plugins["syncer"].messages == ["during"], 15)

            def delivered():
                try:
                    a.plugins["syncer"].send_sync_message("after")
                except ConnectionError:
                    return False
                return wait_for(lambda: "after" in b.plugins["syncer"].messages, 0.5)

            assert wait_for(delivered, 15)
            assert b.plugins["syncer"].messages.count("during") == 1
            assert b.plugins["syncer"].gaps == 0
            assert b.plugins["asyncer"].gaps == 0
        finally:
            a.stop()
            b.stop()
