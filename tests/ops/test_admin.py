"""The "Mega cluster" admin pages with the Django test client."""

from __future__ import annotations

import io
import json
from datetime import datetime

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from mega_cluster.models import PluginState

from .conftest import dead_letter, wait_until

PAGES = {
    "locks": "admin:mega_cluster_clusterlock_changelist",
    "queues": "admin:mega_cluster_clusterqueue_changelist",
    "nodes": "admin:mega_cluster_node_changelist",
    "plugins": "admin:mega_cluster_pluginstate_changelist",
}
VIEW_PERMS = ("view_clusterlock", "view_clusterqueue", "view_node", "view_pluginstate")


def staff_client(*codenames: str) -> tuple[Client, User]:
    user = User.objects.create_user(
        f"staff{User.objects.count()}", password="pw", is_staff=True
    )
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="mega_cluster", codename__in=codenames
        )
    )
    client = Client()
    client.force_login(user)
    return client, user


def release_url(app, key):
    return (
        reverse("admin:mega_cluster_clusterlock_force_release")
        + f"?app={app.name}&key={key}"
    )


def action_url(app, event_id, action):
    return (
        reverse(
            "admin:mega_cluster_clusterqueue_action",
            kwargs={"event_id": event_id, "action": action},
        )
        + f"?app={app.name}"
    )


def held_keys(app):
    return {info.key for info in app.lock_manager.list_locks()}


def test_anonymous_is_sent_to_the_login_page(cluster, client):
    """Every page, and every action URL, redirects anonymous users to the login."""
    urls = [reverse(name) for name in PAGES.values()]
    urls += [release_url(cluster, "k"), action_url(cluster, "e1", "retry")]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("admin:login")), url


def test_staff_needs_the_view_permission(cluster):
    """Staff without mega_cluster permissions get 403 and no section on the index."""
    client, _ = staff_client()
    for name in PAGES.values():
        assert client.get(reverse(name)).status_code == 403
    assert "Mega cluster" not in client.get(reverse("admin:index")).content.decode()
    viewer, _ = staff_client(*VIEW_PERMS)
    index = viewer.get(reverse("admin:index")).content.decode()
    assert "Mega cluster" in index
    for label in ("Locks", "Queues", "Nodes", "Plugins"):
        assert f">{label}</a>" in index


def test_locks_page_lists_and_searches_held_locks(cluster):
    """The page shows key, holder and fence of each held lock; ?q= filters by key."""
    viewer, _ = staff_client(*VIEW_PERMS)
    a = cluster.lock_manager.acquire("billing:run", ttl=60)
    b = cluster.lock_manager.acquire("reports:daily", ttl=60)
    try:
        page = viewer.get(reverse(PAGES["locks"]))
        assert page.status_code == 200
        rows = {r["key"]: r for r in page.context["rows"]}
        assert rows["billing:run"]["holder"] == cluster.node_id
        assert rows["billing:run"]["fence"] == a.fence
        assert 0 < rows["reports:daily"]["ttl_left"] <= 60
        assert not page.context["can_release"]
        assert "Force release" not in page.content.decode()
        found = viewer.get(reverse(PAGES["locks"]), {"q": "REPORTS"})
        assert [r["key"] for r in found.context["rows"]] == ["reports:daily"]
    finally:
        a.release()
        b.release()


def test_force_release_needs_its_permission(cluster):
    """Without force_release_lock: 403 on GET and POST, and the lock stays held."""
    viewer, _ = staff_client(*VIEW_PERMS)
    lock = cluster.lock_manager.acquire("stuck", ttl=60)
    try:
        assert viewer.get(release_url(cluster, "stuck")).status_code == 403
        response = viewer.post(release_url(cluster, "stuck"), {"key": "stuck"})
        assert response.status_code == 403
        assert "stuck" in held_keys(cluster)
        assert not LogEntry.objects.exists()
    finally:
        lock.release()


def test_force_release_confirms_then_releases_and_logs(cluster):
    """GET shows a confirmation and changes nothing; POST frees the lock and logs
    who released which key from which holder."""
    operator, user = staff_client(*VIEW_PERMS, "force_release_lock")
    lock = cluster.lock_manager.acquire("stuck", ttl=60)
    confirm = operator.get(release_url(cluster, "stuck"))
    assert confirm.status_code == 200
    assert "Are you sure?" in confirm.content.decode()
    assert confirm.context["lock"]["holder"] == cluster.node_id
    assert "stuck" in held_keys(cluster)
    form = {"key": "stuck", "holder": cluster.node_id, "fence": lock.fence}
    assert f'name="fence" value="{lock.fence}"' in confirm.content.decode()
    response = operator.post(release_url(cluster, "stuck"), form)
    assert response.status_code == 302
    assert "stuck" not in held_keys(cluster)
    assert lock.extend() is False  # the holder finds its lease gone
    (entry,) = LogEntry.objects.all()
    assert entry.user == user and entry.object_id == "stuck"
    assert cluster.node_id in entry.change_message
    assert f"fence {lock.fence}" in entry.change_message


def test_force_release_frees_only_the_confirmed_lease(cluster):
    """The lock changes hands between the confirmation and the POST: the POST
    carries the holder and fence the operator confirmed, so nothing is released
    and the page says who holds it now; nothing is logged as released."""
    operator, _ = staff_client(*VIEW_PERMS, "force_release_lock")
    first = cluster.lock_manager.acquire("moving", ttl=60)
    confirm = operator.get(release_url(cluster, "moving"))
    seen = confirm.context["lock"]
    assert seen["fence"] == first.fence
    first.release()
    second = cluster.lock_manager.acquire("moving", ttl=60)
    try:
        form = {"key": "moving", "holder": seen["holder"], "fence": seen["fence"]}
        response = operator.post(release_url(cluster, "moving"), form, follow=True)
        assert "moving" in held_keys(cluster)
        assert second.extend() is True and not second.lost
        text = response.content.decode()
        assert "changed hands" in text and "Nothing was released" in text
        assert f"fence {second.fence}" in text
        assert not LogEntry.objects.exists()
        # a POST that names no lease releases nothing either
        operator.post(release_url(cluster, "moving"), {"key": "moving"})
        assert "moving" in held_keys(cluster)
    finally:
        second.release()


def test_force_release_is_csrf_protected(cluster):
    """A POST without the CSRF token is refused and the lock stays held."""
    _, user = staff_client(*VIEW_PERMS, "force_release_lock")
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    lock = cluster.lock_manager.acquire("guarded", ttl=60)
    try:
        form = {"key": "guarded", "holder": cluster.node_id, "fence": lock.fence}
        response = strict.post(release_url(cluster, "guarded"), form)
        assert response.status_code == 403
        assert "guarded" in held_keys(cluster)
    finally:
        lock.release()


def test_queues_page_and_event_detail(cluster):
    """Counters per channel, the dead letter with its error, filter and detail."""
    event_id = dead_letter(cluster, "orders", {"order": 7})
    viewer, _ = staff_client(*VIEW_PERMS)
    page = viewer.get(reverse(PAGES["queues"]))
    assert page.status_code == 200
    (row,) = page.context["rows"]
    assert (row["channel"], row["dead"], row["failed"]) == ("orders", 1, 1)
    assert [e["id"] for e in page.context["events"]] == [event_id]
    other = viewer.get(reverse(PAGES["queues"]), {"channel": "other"})
    assert other.context["events"] == []
    detail = viewer.get(
        reverse("admin:mega_cluster_clusterqueue_event", args=[event_id])
    )
    text = detail.content.decode()
    assert detail.status_code == 200
    assert "&quot;order&quot;: 7" in text
    assert "RuntimeError: boom on {&#x27;order&#x27;: 7}" in text
    assert "Traceback (most recent call last)" in text and "in __call__" in text
    assert page.context["events"][0]["error"] == ["RuntimeError: boom on {'order': 7}"]
    assert "mc-retry" not in text  # no retry permission, no button


def test_retry_and_discard_need_their_permissions(cluster):
    """Without retry_event / discard_event both URLs answer 403, GET and POST."""
    event_id = dead_letter(cluster)
    viewer, _ = staff_client(*VIEW_PERMS, "discard_event")
    for method in (viewer.get, viewer.post):
        assert method(action_url(cluster, event_id, "retry")).status_code == 403
    viewer, _ = staff_client(*VIEW_PERMS, "retry_event")
    for method in (viewer.get, viewer.post):
        assert method(action_url(cluster, event_id, "discard")).status_code == 403
    assert [d.id for d in cluster.event_queue.dead_letters()] == [event_id]


def test_retry_requeues_and_logs(cluster):
    """GET confirms without acting; POST queues the dead event again, logged."""
    event_id = dead_letter(cluster)
    operator, user = staff_client(*VIEW_PERMS, "retry_event")
    assert operator.get(action_url(cluster, event_id, "retry")).status_code == 200
    assert cluster.event_queue.stats("orders")["orders"]["dead"] == 1
    response = operator.post(action_url(cluster, event_id, "retry"))
    assert response.status_code == 302
    counts = cluster.event_queue.stats("orders")["orders"]
    assert counts["dead"] == 0 and counts["pending"] == 1
    (entry,) = LogEntry.objects.all()
    assert entry.user == user and entry.object_id == event_id
    assert "Retry" in entry.change_message and "orders" in entry.change_message


def test_discard_deletes_and_logs(cluster):
    """POST discard removes the dead letter and logs it."""
    event_id = dead_letter(cluster)
    operator, user = staff_client(*VIEW_PERMS, "discard_event")
    assert operator.post(action_url(cluster, event_id, "discard")).status_code == 302
    assert cluster.event_queue.dead_letters() == []
    (entry,) = LogEntry.objects.all()
    assert entry.user == user and "Discard" in entry.change_message


def test_nodes_page_shows_live_nodes(cluster):
    """A started app is on the Nodes page, alive, with its role and heartbeat age."""
    cluster.start()
    wait_until(lambda: cluster.node_registry.get(cluster.node_id), what="heartbeat")
    viewer, _ = staff_client(*VIEW_PERMS)
    page = viewer.get(reverse(PAGES["nodes"]))
    (row,) = page.context["rows"]
    assert row["node_id"] == cluster.node_id and row["status"] == "alive"
    assert row["role"] == "web" and row["heartbeat_age"] < 5


def test_plugin_disable_and_enable_actions(cluster):
    """The actions go through app.disable_plugin / enable_plugin and are logged;
    users without the change permission cannot run them."""
    cluster.start()
    state = PluginState.objects.get(app_name=cluster.name, name="site_notice")
    viewer, _ = staff_client(*VIEW_PERMS)
    url = reverse(PAGES["plugins"])
    page = viewer.get(url)
    assert page.status_code == 200 and "site_notice" in page.content.decode()
    viewer.post(url, {"action": "disable_plugins", "_selected_action": [state.pk]})
    assert PluginState.objects.get(pk=state.pk).enabled
    operator, _ = staff_client(*VIEW_PERMS, "change_pluginstate")
    response = operator.post(
        url, {"action": "disable_plugins", "_selected_action": [state.pk]}
    )
    assert response.status_code == 302
    assert not PluginState.objects.get(pk=state.pk).enabled
    assert not cluster.plugins["site_notice"].enabled
    operator.post(url, {"action": "enable_plugins", "_selected_action": [state.pk]})
    assert PluginState.objects.get(pk=state.pk).enabled
    assert cluster.plugins["site_notice"].enabled
    assert LogEntry.objects.count() == 2


def test_get_never_changes_state(cluster):
    """GET on every page and action URL leaves locks, dead letters and log alone."""
    event_id = dead_letter(cluster)
    lock = cluster.lock_manager.acquire("keep", ttl=60)
    operator, _ = staff_client(
        *VIEW_PERMS, "force_release_lock", "retry_event", "discard_event"
    )
    try:
        urls = [reverse(name) for name in PAGES.values()]
        urls += [
            release_url(cluster, "keep"),
            action_url(cluster, event_id, "retry"),
            action_url(cluster, event_id, "discard"),
            reverse("admin:mega_cluster_clusterqueue_event", args=[event_id]),
        ]
        for url in urls:
            assert operator.get(url).status_code == 200, url
        assert "keep" in held_keys(cluster)
        assert [d.id for d in cluster.event_queue.dead_letters()] == [event_id]
        assert not LogEntry.objects.exists()
    finally:
        lock.release()


def test_cluster_status_json_matches_the_admin(cluster):
    """cluster_status --json lists the same nodes, locks and queues as the pages."""
    dead_letter(cluster, "orders")
    cluster.start()
    wait_until(lambda: cluster.node_registry.get(cluster.node_id), what="heartbeat")
    lock = cluster.lock_manager.acquire("shared", ttl=60)
    viewer, _ = staff_client(*VIEW_PERMS)
    try:
        out = io.StringIO()
        call_command("cluster_status", "--json", stdout=out)
        (snap,) = json.loads(out.getvalue())["apps"]
        locks = viewer.get(reverse(PAGES["locks"])).context["rows"]
        queues = viewer.get(reverse(PAGES["queues"])).context["rows"]
        nodes = viewer.get(reverse(PAGES["nodes"])).context["rows"]
    finally:
        lock.release()

    def pick(rows, *fields):
        return [tuple(r[f] for f in fields) for r in rows]

    lock_fields = ("key", "holder", "fence", "acquired_at", "waiters")
    assert pick(snap["locks"], *lock_fields) == pick(locks, *lock_fields)
    # The local backend derives expires_at from a monotonic clock at each call.
    ends = [datetime.fromisoformat(r["expires_at"]) for r in (*snap["locks"], *locks)]
    assert abs((ends[0] - ends[1]).total_seconds()) < 0.01
    assert pick(snap["locks"], "key") == [("shared",)]
    queue_fields = ("channel", "pending", "running", "succeeded", "failed", "dead")
    assert pick(snap["queues"], *queue_fields) == pick(queues, *queue_fields)
    node_fields = ("node_id", "role", "status", "pid", "started_at")
    assert pick(snap["nodes"], *node_fields) == pick(nodes, *node_fields)


@pytest.mark.django_db
def test_unknown_cluster_app_is_404(client):
    """?app= naming an app that is not configured is a 404, not a crash."""
    viewer, _ = staff_client(*VIEW_PERMS)
    assert viewer.get(reverse(PAGES["locks"]), {"app": "nope"}).status_code == 404


@pytest.mark.django_db
def test_pages_switch_between_cluster_apps(unique_name):
    """With several cluster apps, ?app= picks the app and each page shows only its
    own locks."""
    from mega_cluster.registry import get_app
    from mega_cluster.testing import cluster_settings

    value = {"APPS": {f"{unique_name}a": {}, f"{unique_name}b": {}}}
    with cluster_settings(value):
        viewer, _ = staff_client(*VIEW_PERMS)
        lock = get_app(f"{unique_name}b").lock_manager.acquire("only-in-b", ttl=30)
        try:
            first = viewer.get(reverse(PAGES["locks"]))
            second = viewer.get(reverse(PAGES["locks"]), {"app": f"{unique_name}b"})
        finally:
            lock.release()
    assert first.context["cluster_app"].name == f"{unique_name}a"
    assert first.context["rows"] == []
    assert [r["key"] for r in second.context["rows"]] == ["only-in-b"]
    assert f"?app={unique_name}b" in second.content.decode()


def test_event_list_filters_by_status_and_channel(cluster):
    """The event list shows pending and dead events, filtered by status and channel;
    a pending event has no retry / discard and the action URL refuses it."""
    dead_id = dead_letter(cluster, "orders")
    pending_id = cluster.event_queue.publish("mail", {"to": "x"})
    operator, _ = staff_client(*VIEW_PERMS, "retry_event", "discard_event")
    url = reverse(PAGES["queues"])

    def listed(**params):
        page = operator.get(url, params)
        assert page.status_code == 200
        return {(e["id"], e["status"]) for e in page.context["events"]}

    assert listed() == {(dead_id, "dead"), (pending_id, "pending")}
    assert listed(status="pending") == {(pending_id, "pending")}
    assert listed(status="dead") == {(dead_id, "dead")}
    assert listed(channel="mail", status="dead") == set()
    assert operator.get(url, {"status": "bogus"}).status_code == 404
    detail = operator.get(
        reverse("admin:mega_cluster_clusterqueue_event", args=[pending_id])
    )
    assert detail.status_code == 200 and "mc-retry" not in detail.content.decode()
    response = operator.post(action_url(cluster, pending_id, "discard"))
    assert response.status_code == 302
    assert cluster.event_queue.stats("mail")["mail"]["pending"] == 1
    assert not LogEntry.objects.exists()


@pytest.mark.django_db
def test_events_api_validates_its_arguments(unique_name):
    """events() rejects an unknown status and a bad channel name at the call."""
    from mega_cluster.testing import make_app

    app = make_app(unique_name)
    with pytest.raises(ValueError, match="status must be one of"):
        app.event_queue.events(status="failed")
    with pytest.raises(ValueError):
        app.event_queue.events(channel="bad channel!")
    assert app.event_queue.events() == []
