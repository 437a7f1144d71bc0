"""Idempotent sync-message handlers: a message delivered again with the same id (a
replay, a redelivery) runs the handler once; plain handlers run it again."""

from __future__ import annotations

import pytest
from django.db import transaction

from mega_cluster import Plugin, idempotent
from mega_cluster.inbox import get_inbox
from mega_cluster.pubsub import envelope
from mega_cluster.sync_messages.manager import WIRE_PREFIX
from mega_cluster.testing import make_app
from tests.pubsub.helpers import Recorder, pubsub_settings, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
]


def send_twice(sender, channel: str, payload_json: str) -> str:
    """One sync message (one id, one sequence number) handed to the broker twice,
    as a replay or a redelivery would; returns its id."""
    backend = sender.pubsub_manager.backend
    wire = WIRE_PREFIX + channel
    data = envelope.build(
        app=sender.name,
        node=sender.node_id,
        channel=wire,
        seq=1,
        to=envelope.TO_OTHERS,
        payload_json=payload_json,
    )
    for _ in range(2):
        backend.publish_sync(backend.wire_channel(wire), data)
    return envelope.decode(data).id


class Writes:
    """An idempotent handler whose effect is a database write it can count."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[object] = []

    def __call__(self, message) -> None:
        # a write in the handler's transaction: the inbox row commits with it
        from mega_cluster.models import InboxTally

        InboxTally.objects.create(app_name=self.name, consumer=str(message))
        self.calls.append(message)


@pytest.fixture(params=BACKENDS)
def nodes(request, unique_name):
    settings = {"PUBSUB": pubsub_settings(request.param)}
    a = make_app(unique_name, settings, node_id=f"{unique_name}-a")
    b = make_app(unique_name, settings, node_id=f"{unique_name}-b")
    a.start()
    b.start()
    yield a, b
    a.stop()
    b.stop()


def test_a_duplicate_runs_an_idempotent_handler_once(nodes):
    """The same message twice: the idempotent handler ran once (its inbox counts
    the skipped duplicate), a plain handler on the same channel twice; a second
    idempotent handler of the channel is a consumer of its own."""
    a, b = nodes
    once, other, plain = Writes("once"), Writes("other"), Recorder("plain")
    sync = b.sync_message_manager
    sync.subscribe("catalog", once, idempotent=True)
    sync.subscribe("catalog", other, idempotent="search-index")
    sync.subscribe("catalog", plain)
    sync.subscribe("sentinel", sentinel := Recorder("sentinel"))
    send_twice(a, "catalog", '{"changed":[1]}')
    plain.wait(2)
    a.sync_message_manager.publish("sentinel", "s", transaction=False)
    sentinel.wait(1)  # every message before it was handled
    assert once.calls == [{"changed": [1]}]
    assert other.calls == [{"changed": [1]}]
    assert plain.items == [{"changed": [1]}, {"changed": [1]}]
    inbox = get_inbox(b)
    consumer = f"sync:catalog:{Writes.__module__}.Writes"
    assert inbox.stats() == {
        consumer: {"recorded": 1, "skipped": 1},
        "sync:catalog:search-index": {"recorded": 1, "skipped": 1},
    }
    assert inbox.skipped == {consumer: 1, "sync:catalog:search-index": 1}
    # a new message (new id) runs again
    a.sync_message_manager.publish("catalog", {"changed": [2]}, transaction=False)
    assert wait_for(lambda: len(once.calls) == 2)


def test_a_failing_idempotent_handler_is_not_recorded(nodes):
    """A handler that raises rolls back its inbox row with its writes: the same
    message delivered again runs it again."""
    a, b = nodes
    calls = []

    @idempotent
    def flaky(message):
        calls.append(message)
        if len(calls) == 1:
            raise RuntimeError("first delivery fails")

    b.sync_message_manager.subscribe("catalog", flaky)
    send_twice(a, "catalog", "1")
    assert wait_for(lambda: len(calls) == 2)
    consumer = f"sync:catalog:{flaky.__module__}.{flaky.__qualname__}"
    assert get_inbox(b).stats() == {consumer: {"recorded": 1, "skipped": 0}}


class LedgerPlugin(Plugin):
    name = "ledger"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.messages = []

    @idempotent
    def handle_sync_message(self, message):
        self.messages.append(message)


def test_a_plugins_idempotent_handler_runs_once_per_message(unique_name):
    """``@idempotent`` on ``handle_sync_message``: consumer
    ``sync:plugin:<name>:handle_sync_message``; a duplicate is skipped."""
    apps = []
    for node in ("a", "b"):
        app = make_app(unique_name, {}, node_id=f"{unique_name}-{node}")
        app.plugins = {"ledger": LedgerPlugin(app)}
        apps.append(app.start())
    a, b = apps
    try:
        with transaction.atomic():
            a.plugins["ledger"].send_sync_message({"n": 1})
        assert wait_for(lambda: b.plugins["ledger"].messages == [{"n": 1}])
        send_twice(a, "plugin:ledger", '{"n":2}')
        assert wait_for(lambda: b.plugins["ledger"].messages == [{"n": 1}, {"n": 2}])
        assert wait_for(
            lambda: (
                get_inbox(b).stats()
                == {
                    "sync:plugin:ledger:handle_sync_message": {
                        "recorded": 2,
                        "skipped": 1,
                    }
                }
            )
        )
        assert b.plugins["ledger"].messages == [{"n": 1}, {"n": 2}]
    finally:
        a.stop()
        b.stop()
