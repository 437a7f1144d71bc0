"""The backend's checks, run by the framework's ``check()``, and bad OPTIONS."""

from __future__ import annotations

import pytest
from django.tasks import task_backends
from django.tasks.checks import check_tasks
from django.test import override_settings

from mega_cluster.exceptions import ConfigurationError, InvalidName
from mega_cluster.tasks import channel_for, queue_channel

from . import jobs
from .conftest import tasks_setting

BACKEND = "mega_cluster.tasks.ClusterTaskBackend"


def ids(**params) -> list[tuple[str, str]]:
    with override_settings(TASKS={"default": {"BACKEND": BACKEND, **params}}):
        return [
            (m.id, m.msg)
            for m in check_tasks()  # what Django's check framework runs
            if m.id and m.id.startswith("mega_cluster.E03")
        ]


def test_a_valid_backend_passes():
    assert ids(QUEUES=["default"], OPTIONS={"MAX_RETRIES": 2, "CONCURRENCY": 8}) == []


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"MAX_RETRIES": -1}, "OPTIONS['MAX_RETRIES']"),
        ({"MAX_RETRIES": True}, "OPTIONS['MAX_RETRIES']"),
        ({"CONCURRENCY": "4"}, "OPTIONS['CONCURRENCY']"),
        ({"PRIORITY_STEP": float("nan")}, "OPTIONS['PRIORITY_STEP']"),
        ({"CHANNEL_PREFIX": "tasks/"}, "OPTIONS['CHANNEL_PREFIX']"),
        ({"RETRIES": 3}, "unknown OPTIONS 'RETRIES'"),
        ({"APP": 3}, "OPTIONS['APP']"),
    ],
)
def test_bad_options_are_check_errors(options, fragment):
    (found,) = ids(QUEUES=["default"], OPTIONS=options)
    assert found[0] == "mega_cluster.E030" and fragment in found[1]


def test_bad_options_refuse_to_enqueue():
    with override_settings(TASKS=tasks_setting(MAX_RETRIES="3")):
        with pytest.raises(ConfigurationError, match="MAX_RETRIES"):
            jobs.noop_task.enqueue()


def test_queues_must_be_listed_and_be_channel_names():
    assert [i for i, _ in ids(QUEUES=[])] == ["mega_cluster.E031"]
    ((code, msg),) = ids(QUEUES=["ok", "not ok"])
    assert code == "mega_cluster.E032" and "'not ok'" in msg


def test_unknown_cluster_app():
    ((code, msg),) = ids(QUEUES=["default"], OPTIONS={"APP": "nope"})
    assert code == "mega_cluster.E033" and "nope" in msg


def test_channel_for_names_the_channel_of_a_task():
    """What a periodic job declared on a task needs: the channel it goes to."""
    with override_settings(TASKS=tasks_setting(CHANNEL_PREFIX="jobs.")):
        assert channel_for(jobs.noop_task) == "jobs.default"
        assert channel_for(jobs.noop_task.using(queue_name="other")) == "jobs.other"
        assert task_backends["default"].channels() == ["jobs.default", "jobs.other"]
    assert queue_channel("emails") == "tasks.emails"
    with pytest.raises(InvalidName):
        queue_channel("bad name")
    with pytest.raises(TypeError, match=r"takes a django\.tasks Task"):
        channel_for(jobs.noop_task.func)
    immediate = {
        "default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"}
    }
    with override_settings(TASKS=immediate), pytest.raises(TypeError, match="not a"):
        channel_for(jobs.noop_task)


def test_runworker_queues_option():
    """--queues maps task queue names to their channels; unknown names fail."""
    from django.core.management import CommandError, call_command

    from mega_cluster.management.commands.runworker import Command
    from mega_cluster.tasks.consume import queue_channels

    with override_settings(TASKS=tasks_setting()):
        assert queue_channels(["other", "default"]) == ["tasks.other", "tasks.default"]
        with pytest.raises(CommandError, match=r"no mega_cluster\.tasks backend"):
            call_command("runworker", queues="default,nope")
        with pytest.raises(CommandError, match="at least one"):
            call_command("runworker", queues=" , ")
    assert "--queues" in Command().create_parser("manage.py", "runworker").format_help()
