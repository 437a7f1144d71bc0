"""The operations pages keep the stock admin look, on every supported Django.

Cheap guards for what the screenshots show: each page is compared with the stock
Plugins changelist (a plain ``ModelAdmin`` with search and filters) rendered by the
same Django, so the breadcrumbs, the search toolbar, the filter column and the
result table sit where that Django's CSS expects them (Django 6 moved all four).
"""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from mega_cluster.models import PluginState

from .conftest import cluster_value, dead_letter

pytestmark = pytest.mark.django_db(transaction=True)

VOID = {"area", "base", "br", "col", "hr", "img", "input", "link", "meta", "wbr"}


class Element:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Element | None):
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Element] = []
        self.parts: list[Element | str] = []  # children and text, in order

    @property
    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def ancestors(self) -> list[Element]:
        node, found = self.parent, []
        while node is not None:
            found.append(node)
            node = node.parent
        return found

    def path_below(self, top_id: str) -> list[tuple[str, str, str]]:
        """Tag, id and class of each ancestor under the one with id ``top_id``,
        outermost first."""
        path = []
        for node in self.ancestors():
            if node.attrs.get("id") == top_id:
                return path[::-1]
            path.append(
                (node.tag, node.attrs.get("id", ""), node.attrs.get("class", ""))
            )
        raise AssertionError(f"<{self.tag}> is not inside #{top_id}")

    def walk(self):
        for child in self.children:
            yield child
            yield from child.walk()

    def all_text(self) -> str:
        return "".join(p if isinstance(p, str) else p.all_text() for p in self.parts)

    def adopt(self, child: Element) -> None:
        self.children.append(child)
        self.parts.append(child)


class Page(HTMLParser):
    """An admin page as a tree, enough to ask where an element sits."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.root = Element("#document", {}, None)
        self.current = self.root
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        element = Element(tag, {k: v or "" for k, v in attrs}, self.current)
        self.current.adopt(element)
        if tag not in VOID:
            self.current = element

    def handle_startendtag(self, tag, attrs):
        self.current.adopt(Element(tag, {k: v or "" for k, v in attrs}, self.current))

    def handle_endtag(self, tag):
        node = self.current
        while node is not self.root and node.tag != tag:
            node = node.parent
        if node is not self.root:
            self.current = node.parent

    def handle_data(self, data):
        self.current.parts.append(data)

    def find(self, tag: str = "", id: str = "", cls: str = "") -> Element:
        found = self.find_all(tag, id, cls)
        assert found, f"no <{tag or '*'} id={id!r} class={cls!r}> on the page"
        return found[0]

    def find_all(self, tag: str = "", id: str = "", cls: str = "") -> list[Element]:
        return [
            e
            for e in self.root.walk()
            if (not tag or e.tag == tag)
            and (not id or e.attrs.get("id") == id)
            and (not cls or cls in e.classes)
        ]

    def breadcrumbs(self) -> tuple[Element, list[str]]:
        """The breadcrumbs element and its trail of labels."""
        (bar,) = [e for e in self.root.walk() if "breadcrumbs" in e.classes]
        text = " ".join(bar.all_text().split())
        if bar.tag == "ol":
            return bar, [" ".join(li.all_text().split()) for li in bar.children]
        return bar, [part.strip() for part in text.split("\u203a")]


@pytest.fixture
def app(unique_name):
    from mega_cluster.registry import get_app
    from mega_cluster.testing import cluster_settings

    value = cluster_value("embedded", unique_name)
    with cluster_settings(value):
        app = get_app()
        app.value = value
        yield app


@pytest.fixture
def admin_client() -> Client:
    user = User.objects.create_superuser("look", "look@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def stock(app, admin_client) -> Page:
    """The Plugins changelist: Django's own template, with a search box, filters
    and one row."""
    PluginState.objects.create(app_name=app.name, name="demo", version="1.0")
    response = admin_client.get(reverse("admin:mega_cluster_pluginstate_changelist"))
    assert response.status_code == 200
    page = Page(response.content.decode())
    page.find(id="toolbar"), page.find(id="changelist-filter")
    page.find("table", id="result_list")
    return page


def get(client: Client, url: str) -> Page:
    response = client.get(url)
    assert response.status_code == 200, url
    return Page(response.content.decode())


def assert_stock_breadcrumbs(page: Page, stock: Page, trail: list[str]) -> None:
    bar, labels = page.breadcrumbs()
    stock_bar, _ = stock.breadcrumbs()
    assert (bar.tag, bar.parent.tag) == (stock_bar.tag, stock_bar.parent.tag)
    assert labels == ["Home", "Mega cluster", *trail]


def assert_stock_table(page: Page, stock: Page) -> None:
    """The result table sits where the stock one does, and each header wraps its
    text in ``div.text`` as the stock CSS (``thead th`` has no padding) expects."""
    table = page.find("table", id="result_list")
    stock_table = stock.find("table", id="result_list")
    assert table.path_below("changelist") == stock_table.path_below("changelist")
    headers = [
        e for e in table.walk() if e.tag == "th" and e.parent.parent.tag == "thead"
    ]
    assert headers
    for th in headers:
        (text,) = [c for c in th.children if "text" in c.classes]
        assert [c.tag for c in text.children] in (["span"], ["a"])


def test_locks_page_is_a_stock_changelist(app, admin_client, stock):
    """Breadcrumbs, the search toolbar above the table (not a flex column beside
    it) and the table are laid out as on the stock changelist."""
    lock = app.lock_manager.acquire("look:key", ttl=60)
    try:
        page = get(admin_client, reverse("admin:mega_cluster_clusterlock_changelist"))
    finally:
        lock.release()
    assert_stock_breadcrumbs(page, stock, ["Locks"])
    toolbar = page.find(id="toolbar")
    assert toolbar.path_below("changelist") == stock.find(id="toolbar").path_below(
        "changelist"
    )
    assert_stock_table(page, stock)
    assert page.find("tr", cls="mc-lock").attrs["data-key"] == "look:key"


def test_queues_page_has_the_filter_column_where_stock_puts_it(
    app, admin_client, stock
):
    """The filter nav is placed as on the stock changelist (on Django 6 inside
    ``.changelist-form-container``, beside the list; on 5.2 after it)."""
    event_id = dead_letter(app)
    page = get(admin_client, reverse("admin:mega_cluster_clusterqueue_changelist"))
    assert_stock_breadcrumbs(page, stock, ["Queues"])
    nav = page.find(id="changelist-filter")
    stock_nav = stock.find(id="changelist-filter")
    assert nav.path_below("changelist") == stock_nav.path_below("changelist")
    assert "filtered" in page.find(id="changelist").classes
    assert_stock_table(page, stock)
    assert page.find("tr", cls="mc-event").attrs["data-event"] == event_id

    detail = get(
        admin_client,
        reverse("admin:mega_cluster_clusterqueue_event", args=[event_id]),
    )
    assert_stock_breadcrumbs(detail, stock, ["Queues", event_id])
    confirm = get(
        admin_client,
        reverse(
            "admin:mega_cluster_clusterqueue_action",
            kwargs={"event_id": event_id, "action": "retry"},
        ),
    )
    assert_stock_breadcrumbs(confirm, stock, ["Queues", event_id, "Retry"])


def test_nodes_page_and_lock_confirmation(app, admin_client, stock):
    """The Nodes list and the force-release confirmation carry the stock
    breadcrumbs; Nodes has the stock table layout."""
    app.start()
    try:
        page = get(admin_client, reverse("admin:mega_cluster_node_changelist"))
        assert_stock_breadcrumbs(page, stock, ["Nodes"])
        assert_stock_table(page, stock)
        lock = app.lock_manager.acquire("look:confirm", ttl=60)
        try:
            confirm = get(
                admin_client,
                reverse("admin:mega_cluster_clusterlock_force_release")
                + f"?app={app.name}&key=look:confirm",
            )
        finally:
            lock.release()
    finally:
        app.stop()
    assert_stock_breadcrumbs(confirm, stock, ["Locks", "Force release"])


def test_pages_style_through_a_file_not_inline_css(app, admin_client):
    """Our few rules come from a static file, so a Content-Security-Policy without
    'unsafe-inline' styles keeps them (what Django's own templates inline, such as
    the changelist's header-width rule, is Django's to nonce)."""
    from django.contrib.staticfiles import finders
    from django.templatetags.static import static

    href = static("mega_cluster/admin.css")
    lock = app.lock_manager.acquire("look:css", ttl=60)
    try:
        urls = [
            reverse("admin:mega_cluster_clusterlock_changelist"),
            reverse("admin:mega_cluster_clusterlock_force_release")
            + f"?app={app.name}&key=look:css",
        ]
        for url in urls:
            response = admin_client.get(url)
            assert response.status_code == 200, url
            html = response.content.decode()
            assert ".mc-" not in html and " style=" not in html, url
            assert f'<link rel="stylesheet" href="{href}">' in html, url
    finally:
        lock.release()
    found = finders.find("mega_cluster/admin.css")
    assert found and ".mc-meta" in open(found).read()
