"""The admin's Schedules page: next run, last run and outcome; pause, resume and
run now behind a confirmation, each with its permission and a log entry."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from mega_cluster.models import QueuedEvent, ScheduleRun
from mega_cluster.registry import get_app
from mega_cluster.schedules import get_schedules
from mega_cluster.testing import cluster_settings
from tests.ops.test_admin import staff_client

pytestmark = pytest.mark.django_db(transaction=True)

PAGE = "admin:mega_cluster_schedulestate_changelist"


@pytest.fixture
def app(unique_name):
    value = {
        "APP_NAME": unique_name,
        "EVENT_QUEUE": {"BACKEND": "database", "CONSUME": False},
        "SCHEDULES": {
            "JOBS": {
                "digest": {
                    "FUNCTION": "tests.schedules.recorded.note",
                    "CRON": "0 7 * * mon-fri",
                    "TIMEZONE": "Europe/Paris",
                },
                "beat": {"FUNCTION": "tests.schedules.recorded.note", "EVERY": 60},
            }
        },
    }
    with cluster_settings(value):
        yield get_app()


def action(app, job, what):
    url = reverse(
        "admin:mega_cluster_schedulestate_action", kwargs={"job": job, "action": what}
    )
    return f"{url}?app={app.name}"


def test_the_page_lists_jobs_with_next_and_last_run(app):
    viewer, _ = staff_client("view_schedulestate")
    schedules = get_schedules(app)
    schedules.run_now("beat")
    ScheduleRun.objects.filter(app_name=app.name, job="beat").update(
        status="failed", error="Traceback ...\nConnectionError: down"
    )
    response = viewer.get(reverse(PAGE) + f"?app={app.name}")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<h1>Schedules</h1>" in html or "Schedules" in response.context["title"]
    rows = {row["name"]: row for row in response.context["rows"]}
    assert rows["digest"]["schedule"] == "cron 0 7 * * mon-fri (Europe/Paris)"
    assert rows["digest"]["next_run"] is not None and rows["digest"]["outcome"] == ""
    assert (rows["beat"]["outcome"], rows["beat"]["error"]) == (
        "failed",
        "ConnectionError: down",
    )
    assert "mc-pause" not in html and "mc-run" not in html  # no permission


def test_actions_need_their_permission(app):
    viewer, _ = staff_client("view_schedulestate")
    assert viewer.get(action(app, "beat", "pause")).status_code == 403
    assert viewer.post(action(app, "beat", "run")).status_code == 403
    assert not QueuedEvent.objects.filter(app_name=app.name).exists()
    assert not LogEntry.objects.exists()


def test_pause_confirms_then_pauses_and_resume_resumes(app):
    operator, user = staff_client("view_schedulestate", "pause_schedule")
    confirm = operator.get(action(app, "beat", "pause"))
    assert "Are you sure?" in confirm.content.decode()
    assert not get_schedules(app).status()[0].paused  # a GET changes nothing
    assert operator.post(action(app, "beat", "pause")).status_code == 302
    status = {s.job.name: s for s in get_schedules(app).status()}
    assert status["beat"].paused and not status["digest"].paused
    page = operator.get(reverse(PAGE) + f"?app={app.name}").content.decode()
    assert "mc-resume" in page
    operator.post(action(app, "beat", "resume"))
    assert not {s.job.name: s for s in get_schedules(app).status()}["beat"].paused
    entries = [e.change_message for e in LogEntry.objects.order_by("pk")]
    assert entries[0].startswith("Pause periodic job 'beat'")
    assert LogEntry.objects.filter(user=user).count() == 2


def test_run_now_queues_a_run(app):
    operator, _ = staff_client("view_schedulestate", "run_schedule")
    assert operator.post(action(app, "digest", "run")).status_code == 302
    (run,) = ScheduleRun.objects.filter(app_name=app.name, job="digest")
    assert run.manual and run.status == "queued"
    assert QueuedEvent.objects.filter(id=run.event_id, channel="mc.schedule.digest")
    assert operator.get(action(app, "nope", "run")).status_code == 404
    assert operator.get(action(app, "digest", "explode")).status_code == 404


def test_cluster_status_has_a_schedules_section(app):
    import io
    import json

    from django.core.management import call_command

    get_schedules(app).pause("digest")
    out = io.StringIO()
    call_command("cluster_status", "--app", app.name, stdout=out)
    text = out.getvalue()
    assert "Schedules (2 periodic jobs)" in text
    (line,) = [x for x in text.splitlines() if x.strip().startswith("digest")]
    assert "paused" in line and "cron 0 7 * * mon-fri (Europe/Paris)" in line
    out = io.StringIO()
    call_command("cluster_status", "--app", app.name, "--json", stdout=out)
    (snap,) = json.loads(out.getvalue())["apps"]
    rows = {row["job"]: row for row in snap["schedules"]}
    assert rows["digest"]["paused"] is True and rows["beat"]["next_run"]
