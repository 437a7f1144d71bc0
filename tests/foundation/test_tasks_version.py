"""``mega_cluster.tasks`` on a Django without ``django.tasks`` (5.2): a check error
and ``ImproperlyConfigured`` instead of a ``TASKS`` setting silently ignored. On
Django 6.0+ the same check is quiet."""

from __future__ import annotations

import importlib.util

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

import mega_cluster.tasks
from mega_cluster.tasks.consume import check_django_version

HAS_TASKS = importlib.util.find_spec("django.tasks") is not None
SETTING = {"default": {"BACKEND": "mega_cluster.tasks.ClusterTaskBackend"}}


@pytest.mark.skipif(HAS_TASKS, reason="this Django has django.tasks")
def test_without_django_tasks_the_backend_is_refused():
    with override_settings(TASKS=SETTING):
        (error,) = check_django_version()
    assert error.id == "mega_cluster.E034"
    assert "Django 6.0 or newer" in error.msg and "TASKS['default']" in error.msg
    with pytest.raises(ImproperlyConfigured, match=r"needs django\.tasks"):
        mega_cluster.tasks.ClusterTaskBackend  # noqa: B018
    # What a periodic job may ask needs no django.tasks.
    assert mega_cluster.tasks.queue_channel("emails") == "tasks.emails"


@pytest.mark.skipif(not HAS_TASKS, reason="this Django has no django.tasks")
def test_with_django_tasks_the_version_check_is_quiet():
    with override_settings(TASKS=SETTING):
        assert check_django_version() == []
    assert mega_cluster.tasks.ClusterTaskBackend.__name__ == "ClusterTaskBackend"
