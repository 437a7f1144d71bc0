"""The Outbox admin page and the outbox metrics."""

from __future__ import annotations

import re
import time

import pytest
from django.urls import reverse

from mega_cluster import metrics
from mega_cluster.models import OutboxMessage
from mega_cluster.registry import get_app

from .test_admin import staff_client

pytestmark = pytest.mark.django_db

URL = "admin:mega_cluster_outboxmessage_changelist"


def _row(app_name, channel, seq, *, sent, age=0.0):
    now = time.time()
    return OutboxMessage.objects.create(
        app_name=app_name,
        kind="sync",
        channel=channel,
        seq=seq,
        node="node-x",
        payload="{}",
        created_at=now - age,
        sent_at=now if sent else None,
    )


def test_the_outbox_page_lists_unsent_rows_by_default():
    _row("main", "waiting-channel", 1, sent=False, age=42)
    _row("main", "done-channel", 1, sent=True)
    client, _ = staff_client("view_outboxmessage")
    page = client.get(reverse(URL)).content.decode()
    assert "waiting-channel" in page and "done-channel" not in page
    assert re.search(r"4[2-9]\.\ds", page)  # how long it has waited
    everything = client.get(reverse(URL) + "?state=all").content.decode()
    assert "waiting-channel" in everything and "done-channel" in everything
    sent = client.get(reverse(URL) + "?state=sent").content.decode()
    assert "waiting-channel" not in sent and "done-channel" in sent


def test_the_outbox_page_needs_its_permission_and_is_read_only():
    row = _row("main", "c", 1, sent=False)
    client, _ = staff_client("view_clusterqueue")
    assert client.get(reverse(URL)).status_code == 403
    viewer, _ = staff_client("view_outboxmessage")
    change = reverse("admin:mega_cluster_outboxmessage_change", args=[row.pk])
    response = viewer.post(change, {"channel": "edited"})
    assert response.status_code == 403
    row.refresh_from_db()
    assert row.channel == "c"


@pytest.mark.skipif(not metrics.ENABLED, reason="prometheus-client not installed")
def test_outbox_gauges_show_unsent_rows_and_their_age(client):
    app = get_app()
    _row(app.name, "late", 1, sent=False, age=30)
    _row(app.name, "late", 2, sent=False, age=10)
    text = client.get(reverse("mega_cluster:metrics")).content.decode()
    assert f'mega_cluster_outbox_unsent{{app="{app.name}"}} 2.0' in text
    lag = re.search(
        rf'mega_cluster_outbox_lag_seconds{{app="{app.name}"}} ([0-9.]+)', text
    )
    assert lag is not None and 30 <= float(lag.group(1)) < 300
    info = app.outbox.as_dict()
    assert info["unsent"] == 2 and info["oldest_unsent_age"] >= 30
