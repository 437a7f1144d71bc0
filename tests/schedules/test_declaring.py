"""Declaring jobs: options validated where they are written, settings errors as
checks naming the setting, plugin jobs found on the class."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from mega_cluster import Plugin, conf
from mega_cluster.schedules import JobError, get_schedules, periodic
from mega_cluster.schedules.discovery import from_plugin
from mega_cluster.testing import make_app


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "exactly one of every="),
        ({"every": 60, "cron": "* * * * *"}, "exactly one of every="),
        ({"every": 0}, "between 1 and"),
        ({"every": 1.5}, "whole number of seconds, got 1.5"),
        ({"every": True}, "whole number of seconds"),
        ({"every": 60, "timezone": "UTC"}, "timezone applies to cron= only"),
        ({"cron": "* * *"}, "cron: '\\* \\* \\*' has 3 fields"),
        ({"cron": "0 3 * * *", "timezone": "Nowhere/Land"}, "unknown time zone"),
        ({"every": 60, "missed": "all"}, "missed must be one of skip, latest"),
        ({"every": 60, "grace": -1}, "grace must be between"),
        ({"every": 60, "overlap": "no"}, "overlap must be True or False"),
        ({"every": 60, "jitter": float("nan")}, "jitter must be between"),
        ({"every": 60, "max_retries": -1}, "max_retries must be a whole number"),
        ({"every": 60, "timeout": 0}, "timeout must be between"),
        ({"every": 60, "every_day": 1}, "unknown option 'every_day'"),
    ],
)
def test_periodic_rejects_a_bad_option_where_it_is_written(options, message):
    with pytest.raises(JobError, match=message):
        periodic(**options)


def test_periodic_rejects_a_bad_name():
    with pytest.raises(JobError, match="a job name is 1-150 characters"):
        periodic(name="with space", every=60)


def parse(jobs):
    return conf.parse({"SCHEDULES": {"JOBS": jobs}})


@pytest.mark.parametrize(
    ("jobs", "message"),
    [
        ([], "expected a dict of job name to job settings"),
        ({"a b": {}}, "job 'a b': a job name is"),
        (
            {"x": {"EVERY": 60}},
            "job 'x': give FUNCTION (the dotted path of a function) or TASK",
        ),
        ({"x": {"FUNCTION": "m.f", "every": 60}}, "keys are upper-case"),
        ({"x": {"FUNCTION": "m.f", "EVERY": 0.5}}, "job 'x': EVERY must be a whole"),
        ({"x": {"FUNCTION": "m.f", "CRON": "61 * * * *"}}, "CRON: minute: 61"),
        ({"x": {"FUNCTION": "m.f", "EVERY": 9, "MISSED": 1}}, "MISSED must be one"),
    ],
)
def test_a_bad_job_in_the_setting_is_an_error_naming_it(jobs, message):
    problems = parse(jobs).problems
    assert [p.id for p in problems] == ["mega_cluster.E005"]
    assert problems[0].msg.startswith("MEGA_CLUSTER app 'main': SCHEDULES JOBS: ")
    assert message in problems[0].msg


def test_a_function_that_does_not_import_is_improperly_configured():
    app = make_app(
        "sched-import",
        {
            "SCHEDULES": {
                "JOBS": {
                    "x": {"FUNCTION": "tests.schedules.recorded.missing", "EVERY": 60}
                }
            }
        },
    )
    with pytest.raises(ImproperlyConfigured, match=r"JOBS\['x'\] FUNCTION"):
        get_schedules(app).jobs()


class Reports(Plugin):
    name = "reports"
    schedules = {"reports.hourly": {"method": "hourly", "every": 3600}}

    @periodic(cron="0 7 * * mon-fri", timezone="Europe/Paris", max_retries=5)
    def morning(self, run):
        return ("morning", run)

    @periodic(name="reports.custom", every=60, overlap=False, jitter=5)
    def custom(self, run):
        return ("custom", run)

    def hourly(self, run):
        return ("hourly", run)


def test_a_plugins_jobs_come_from_decorators_and_its_schedules_attribute():
    plugin = Reports(make_app("sched-plugin"))
    jobs = {job.name: job for job in from_plugin(plugin)}
    assert sorted(jobs) == ["reports.custom", "reports.hourly", "reports.morning"]
    morning = jobs["reports.morning"]
    assert morning.schedule == "cron 0 7 * * mon-fri (Europe/Paris)"
    assert (morning.max_retries, morning.plugin, morning.source) == (
        5,
        "reports",
        "plugin reports",
    )
    assert (jobs["reports.custom"].overlap, jobs["reports.custom"].jitter) == (False, 5)
    assert jobs["reports.hourly"].every == 3600
    assert jobs["reports.hourly"].func("r") == ("hourly", "r")  # bound to the plugin


def test_a_schedules_entry_naming_no_method_is_improperly_configured():
    class Broken(Plugin):
        name = "broken"
        schedules = {"broken.x": {"method": "nope", "every": 60}}

    with pytest.raises(ImproperlyConfigured, match=r"schedules\['broken.x'\]"):
        from_plugin(Broken(make_app("sched-broken")))


def _check(value):
    from mega_cluster.schedules.checks import check_schedules
    from mega_cluster.testing import cluster_settings

    with cluster_settings(value):
        from mega_cluster.registry import registry

        registry.apps()
        return [(m.id, m.msg) for m in check_schedules()]


NOTE = {"FUNCTION": "tests.schedules.recorded.note", "EVERY": 60}


def test_checks_name_the_database_the_job_and_the_lock_backend():
    assert _check({"SCHEDULES": {"JOBS": {"ok": NOTE}}}) == []
    ((id_, msg),) = _check({"SCHEDULES": {"DATABASE": "nope", "JOBS": {"ok": NOTE}}})
    assert id_ == "mega_cluster.E020" and "SCHEDULES DATABASE is 'nope'" in msg
    missing = {**NOTE, "FUNCTION": "tests.schedules.recorded.missing"}
    ((id_, msg),) = _check({"SCHEDULES": {"JOBS": {"x": missing}}})
    assert id_ == "mega_cluster.E021" and "JOBS['x'] FUNCTION" in msg
    lonely = {**NOTE, "OVERLAP": False}
    ((id_, msg),) = _check({"SCHEDULES": {"JOBS": {"x": lonely}}})
    assert id_ == "mega_cluster.W020" and "'local'" in msg
    locks = {"BACKEND": "database"}
    assert _check({"LOCKS": locks, "SCHEDULES": {"JOBS": {"x": lonely}}}) == []


def test_a_disabled_plugins_job_is_skipped_and_an_enabled_ones_runs():
    from mega_cluster.events.context import EventContext
    from mega_cluster.schedules.memory import MemoryScheduleStore
    from mega_cluster.testing.clock import Clock

    class Counting(Plugin):
        name = "counting"
        calls: list = []

        @periodic(every=60)
        def count(self, run):
            self.calls.append(run.tick)

    app = make_app("sched-disabled", {"EVENT_QUEUE": {"BACKEND": "memory"}})
    app.plugins["counting"] = Counting(app)
    schedules = get_schedules(app)
    schedules.use(MemoryScheduleStore(Clock().time))
    (run,) = [schedules.run_now("counting.count")]
    payload = {"job": "counting.count", "tick": run.tick.isoformat(), "manual": True}
    ctx = EventContext(id=run.event_id, channel="mc.schedule.counting.count", attempt=1)
    app.plugins["counting"].enabled = False
    schedules.handler.process(payload, ctx)
    (skipped,) = schedules.runs("counting.count")
    assert (skipped.status, skipped.error) == ("skipped", "plugin counting is disabled")
    assert Counting.calls == []
    app.plugins["counting"].enabled = True
    schedules.handler.process(payload, ctx)
    assert Counting.calls == [run.tick]
    assert schedules.runs("counting.count")[0].status == "succeeded"
    app.stop()
