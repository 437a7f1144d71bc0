"""The example project's plugin pages (HTML and JSON) and the plugins' admin."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from mega_cluster.registry import get_app
from mega_cluster.testing import cluster_settings
from plugins.async_tasks.models import Task
from plugins.data_source.models import Collection

from .conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def app(unique_name):
    value = {
        "APP_NAME": unique_name,
        "EVENT_QUEUE": {"BACKEND": "database", "CONSUME": False},
    }
    with cluster_settings(value):
        yield get_app().start()


@pytest.fixture
def admin_client(client):
    User.objects.create_superuser("admin", "admin@example.com", "pw")
    client.login(username="admin", password="pw")
    return client


@pytest.mark.parametrize(
    "path", ["/auth-policy/", "/data-source/", "/tasks/", "/locks/"]
)
def test_each_page_names_the_serving_node(app, client, path):
    html = client.get(path)
    assert html.status_code == 200
    assert app.node_id in html.content.decode()
    data = client.get(path, {"format": "json"}).json()
    assert data["node"] == app.node_id


def test_html_form_posts_redirect_with_a_message(app, client):
    response = client.post(
        "/data-source/",
        {"action": "create_collection", "collection": "orders", "title": "Orders"},
        follow=True,
    )
    page = response.content.decode()
    assert "Created orders." in page and "<code>orders</code>" in page
    response = client.post(
        "/data-source/",
        {"action": "create_collection", "collection": "Bad Name!"},
        follow=True,
    )
    assert "Invalid collection name" in response.content.decode()
    assert Collection.objects.count() == 1


def test_bad_input_is_a_400_with_the_reason(app, client):
    json = {"HTTP_ACCEPT": "application/json"}
    cases = [
        ("/auth-policy/", {"token_expires_in": "soon"}, "must be a number"),
        ("/auth-policy/", {"token_expires_in": "0"}, "greater than or equal to 1"),
        ("/data-source/", {"action": "drop_table"}, "Unknown action"),
        ("/data-source/", {"action": "remove_field", "collection": "x"}, "No coll"),
        ("/tasks/", {"action": "start", "kind": "nope"}, "Unknown task kind"),
        ("/tasks/", {"action": "cancel", "task": "nope"}, "No task with id"),
        ("/locks/", {"action": "hold", "seconds": "600"}, "seconds must be in"),
    ]
    for path, form, reason in cases:
        response = client.post(path, form, **json)
        assert response.status_code == 400, (path, form, response.content)
        assert reason in response.json()["error"], (path, form, response.json())


def test_lock_held_by_this_node_blocks_a_take(app, client):
    json = {"HTTP_ACCEPT": "application/json"}
    held = client.post("/locks/", {"action": "hold", "seconds": "5"}, **json)
    assert held.status_code == 200 and held.json()["held"] is True
    taken = client.post("/locks/", {"action": "take", "wait": "0"}, **json)
    assert taken.status_code == 409
    assert taken.json()["lock"]["holder"] == app.node_id
    listed = client.get("/locks/", {"format": "json"}).json()["locks"]
    assert [entry["key"] for entry in listed] == ["demo"]


def test_admin_pages_of_the_plugins(app, admin_client):
    for path in (
        "/admin/auth_policy/tokenpolicy/",
        "/admin/data_source/collection/",
        "/admin/data_source/collection/add/",
        "/admin/async_tasks/task/",
        "/admin/async_tasks/taskqueuestate/",
    ):
        assert admin_client.get(path).status_code == 200, path


def test_collection_saved_in_the_admin_reaches_the_registry(app, admin_client):
    """The admin's save goes through schema_changed(): the in-memory registry
    has the collection and its inline field after the commit."""
    response = admin_client.post(
        "/admin/data_source/collection/add/",
        {
            "name": "orders",
            "title": "Orders",
            "fields-TOTAL_FORMS": "1",
            "fields-INITIAL_FORMS": "0",
            "fields-0-name": "total",
            "fields-0-type": "decimal",
        },
    )
    assert response.status_code == 302, response.content[:3000]
    registry = app.plugins["data_source"]
    wait_until(lambda: registry.get_collection("orders"), 1.0, "the collection")
    assert registry.get_collection("orders")["fields"] == {
        "total": {"type": "decimal", "required": False}
    }


def test_admin_action_cancels_queued_tasks(app, admin_client):
    task = app.plugins["async_tasks"].start_task("count", {"steps": 1})
    response = admin_client.post(
        "/admin/async_tasks/task/",
        {"action": "cancel_tasks", "_selected_action": [str(task.pk)]},
    )
    assert response.status_code == 302
    assert Task.objects.get(pk=task.pk).status == "cancelled"
