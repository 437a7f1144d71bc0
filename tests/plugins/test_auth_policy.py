"""auth_policy: the token policy is read through the plugin cache and invalidated
on every node after the transaction commits.

Two nodes of the testing kit, each with its own process-local cache store; the
same plugin across real processes is in tests/cluster/test_plugin_auth_policy.py.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction

from mega_cluster.registry import get_app
from plugins.auth_policy.models import TokenPolicy
from plugins.auth_policy.plugin import PolicyNotFound

pytestmark = pytest.mark.django_db(transaction=True)

#: Each node its own process-local store, as on separate machines without Redis.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "node_a": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "node-a",
    },
    "node_b": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "node-b",
    },
}


@pytest.fixture
def pair(cluster, settings):
    settings.CACHES = CACHES
    cluster.configure(plugins=["auth_policy"])
    cluster(
        2,
        node_settings={
            "node-1": {"CACHE": {"DEFAULT_STORE": "node_a"}},
            "node-2": {"CACHE": {"DEFAULT_STORE": "node_b"}},
        },
    )
    return cluster.plugins("auth_policy")


def test_install_creates_the_default_policy(pair):
    """install() ran once for the two nodes and created the default policy."""
    assert list(TokenPolicy.objects.values_list("name", flat=True)) == ["default"]


def test_policy_is_read_once_then_cached(pair, django_assert_num_queries):
    """The second read of a policy makes no database query."""
    a, _ = pair
    with django_assert_num_queries(1):
        first = a.policy()
    with django_assert_num_queries(0):
        assert a.policy() == first
    assert first["token_expires_in"] == 24 * 3600


def test_update_invalidates_every_node_after_commit(cluster, pair):
    """Inside atomic() both nodes keep the old policy; after COMMIT node A reads
    the new one at once and node B once the sync message is delivered (its
    own store)."""
    a, b = pair
    assert a.policy()["token_expires_in"] == b.policy()["token_expires_in"] == 86400
    with transaction.atomic():
        a.update_policy(token_expires_in=600)
        assert a.policy()["token_expires_in"] == 86400  # cached, not yet committed
    assert a.policy()["token_expires_in"] == 600
    assert b.policy()["token_expires_in"] == 86400  # not delivered yet
    cluster.deliver()
    assert b.policy()["token_expires_in"] == 600


def test_rollback_invalidates_nothing(cluster, pair):
    """A rolled-back edit leaves the cached policy on both nodes and sends nothing."""
    a, b = pair
    a.policy()
    b.policy()
    with pytest.raises(RuntimeError), transaction.atomic():
        a.update_policy(token_expires_in=5)
        raise RuntimeError("roll back")
    TokenPolicy.objects.update(token_expires_in=7)  # behind the plugin's back
    assert cluster.published() == []
    cluster.deliver()
    assert a.policy()["token_expires_in"] == 86400
    assert b.policy()["token_expires_in"] == 86400


def test_bad_input_is_rejected_and_nothing_is_saved(pair):
    a, _ = pair
    with pytest.raises(TypeError, match="Unknown token policy field"):
        a.update_policy(token_lifetime=5)
    with pytest.raises(ValidationError, match="session_expires_in"):
        a.update_policy(token_expires_in=100, session_expires_in=10)
    with pytest.raises(ValidationError):
        a.update_policy(token_expires_in=0)
    assert TokenPolicy.objects.get().token_expires_in == 86400
    with pytest.raises(PolicyNotFound, match="nope"):
        a.policy("nope")


def test_a_missed_invalidation_starts_the_cache_afresh(cluster, pair):
    """Node B misses an edit; at the next message it sees the gap and drops its
    whole cache, so it reads every policy from the database again."""
    a, b = pair
    a.update_policy(renew_window=60)
    cluster.deliver()
    assert b.policy()["renew_window"] == 60
    cluster.drop_next(b)
    a.update_policy(renew_window=42)
    cluster.deliver()
    assert b.policy()["renew_window"] == 60  # stale: the message was lost
    a.update_policy("other", renew_window=5)  # B sees the gap
    cluster.deliver()
    assert b.policy()["renew_window"] == 42


def test_can_renew_follows_the_policy(pair):
    import datetime

    a, _ = pair
    a.update_policy(token_expires_in=60, renew_window=30, session_expires_in=3600)
    t0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    sec = datetime.timedelta(seconds=1)
    assert a.token_expires_at(t0) == t0 + 60 * sec
    assert a.can_renew(t0, t0, now=t0 + 89 * sec)
    assert not a.can_renew(t0, t0, now=t0 + 91 * sec)
    assert not a.can_renew(t0, t0 - 3600 * sec, now=t0 + 10 * sec)


def test_admin_edit_invalidates_the_cached_policy(client):
    """Saving the policy in the admin drops the cached copy after commit."""
    plugin = get_app().plugins["auth_policy"]
    TokenPolicy.objects.get_or_create(name="default")
    assert plugin.policy()["token_expires_in"] == 86400
    User.objects.create_superuser("admin", "a@example.com", "pw")
    client.login(username="admin", password="pw")
    policy = TokenPolicy.objects.get()
    response = client.post(
        f"/admin/auth_policy/tokenpolicy/{policy.pk}/change/",
        {
            "name": "default",
            "token_expires_in": 120,
            "session_expires_in": 3600,
            "renew_window": 60,
        },
    )
    assert response.status_code == 302, response.content[:2000]
    assert plugin.policy()["token_expires_in"] == 120
