"""The Queues page and the metrics show the inbox of idempotent handlers: rows
kept and skipped duplicates per consumer."""

from __future__ import annotations

from django.urls import reverse

from mega_cluster import metrics
from mega_cluster.inbox import get_inbox

from .test_admin import PAGES, VIEW_PERMS, staff_client


def test_queues_page_shows_skipped_duplicates(cluster):
    """A duplicate skipped by an idempotent handler appears on the Queues page,
    cluster-wide (read from the inbox tables), and in the process's metric."""
    inbox = get_inbox(cluster)
    calls = []
    assert inbox.run("event:orders", "e1", calls.append, 1)
    assert not inbox.run("event:orders", "e1", calls.append, 2)
    assert inbox.run("event:orders", "e2", calls.append, 3)
    viewer, _ = staff_client(*VIEW_PERMS)
    page = viewer.get(reverse(PAGES["queues"]))
    assert page.status_code == 200
    assert page.context["inbox"] == [
        {"consumer": "event:orders", "recorded": 2, "skipped": 1}
    ]
    text = page.content.decode()
    assert 'id="inbox_stats"' in text and "Skipped duplicates" in text
    if metrics.ENABLED:
        exposition = metrics.render()[0].decode()
        line = (
            f'mega_cluster_inbox_skipped_total{{app="{cluster.name}",'
            'consumer="event:orders"} 1.0'
        )
        assert line in exposition


def test_queues_page_hides_the_inbox_table_when_empty(cluster):
    viewer, _ = staff_client(*VIEW_PERMS)
    page = viewer.get(reverse(PAGES["queues"]))
    assert page.context["inbox"] == []
    assert 'id="inbox_stats"' not in page.content.decode()
