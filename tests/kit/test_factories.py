"""mega_cluster.testing.factories: rows of the project's app unless told."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings

from mega_cluster import conf
from mega_cluster.models import LockLease, Node, QueuedEvent
from mega_cluster.testing.factories import (
    LockLeaseFactory,
    NodeFactory,
    QueuedEventFactory,
)

pytestmark = pytest.mark.django_db


def test_rows_belong_to_the_project_app_by_default():
    lease = LockLeaseFactory()
    event = QueuedEventFactory(data={"n": 1})
    node = NodeFactory(app_name="other")
    assert lease.app_name == event.app_name == settings.MEGA_CLUSTER["APP_NAME"]
    assert (node.app_name, event.payload) == ("other", '{"n": 1}')
    assert LockLease.objects.count() == QueuedEvent.objects.count() == 1
    assert Node.objects.filter(app_name="other").count() == 1


def test_with_several_apps_the_app_name_must_be_given():
    with override_settings(MEGA_CLUSTER={"APPS": {"main": {}, "admin": {}}}):
        conf.clear_cache()
        try:
            with pytest.raises(ValueError, match=r"several cluster apps .* app_name="):
                NodeFactory()
            assert NodeFactory(app_name="admin").app_name == "admin"
        finally:
            conf.clear_cache()
