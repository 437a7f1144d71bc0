"""Cron expressions: fields, names, macros, the day-field rule, DST both ways."""

from __future__ import annotations

import datetime as dt

import pytest

from mega_cluster.schedules import Cron, CronError

PARIS = "Europe/Paris"  # forward 2026-03-29 01:00 UTC, back 2026-10-25 01:00 UTC


def utc(*args):
    return dt.datetime(*args, tzinfo=dt.UTC)


def fires(cron, start, count):
    found, when = [], start
    for _ in range(count):
        when = cron.next_after(when)
        found.append(when)
    return found


def local(times, cron):
    return [t.astimezone(cron.tz).strftime("%m-%d %H:%M%z") for t in times]


def test_every_15_minutes_on_weekdays_in_office_hours():
    cron = Cron("*/15 9-17 * * mon-fri")
    start = utc(2026, 12, 4, 17, 40)  # a Friday
    assert fires(cron, start, 3) == [
        utc(2026, 12, 4, 17, 45),
        utc(2026, 12, 7, 9, 0),  # Monday
        utc(2026, 12, 7, 9, 15),
    ]


def test_next_after_is_strictly_after():
    cron = Cron("0 * * * *")
    assert cron.next_after(utc(2026, 1, 1, 5, 0)) == utc(2026, 1, 1, 6, 0)
    assert cron.next_after(utc(2026, 1, 1, 5, 0, 0, 1)) == utc(2026, 1, 1, 6, 0)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("@hourly", utc(2026, 1, 1, 1)),
        ("@daily", utc(2026, 1, 2)),
        ("@weekly", utc(2026, 1, 4)),  # the first Sunday
        ("@monthly", utc(2026, 2, 1)),
        ("@yearly", utc(2027, 1, 1)),
        ("0 0 * jan,jul sun", utc(2026, 1, 4)),
        ("0 12 1 * 7", utc(2026, 1, 1, 12)),  # day 1 OR a Sunday (Vixie's rule)
        ("0 0 29 2 *", utc(2028, 2, 29)),  # the next leap day
        ("5-10/5 3 * * *", utc(2026, 1, 1, 3, 5)),
    ],
)
def test_fields_names_and_macros(expression, expected):
    assert Cron(expression).next_after(utc(2026, 1, 1)) == expected


def test_a_fixed_time_in_the_skipped_hour_runs_once_at_the_jump():
    cron = Cron("30 2 * * *", PARIS)
    assert local(fires(cron, utc(2026, 3, 28, 12), 3), cron) == [
        "03-29 03:00+0200",  # 02:30 does not exist: when the clocks jump
        "03-30 02:30+0200",
        "03-31 02:30+0200",
    ]


def test_an_hourly_job_skips_the_skipped_hour():
    cron = Cron("30 * * * *", PARIS)
    assert local(fires(cron, utc(2026, 3, 28, 23, 45), 3), cron) == [
        "03-29 01:30+0100",
        "03-29 03:30+0200",
        "03-29 04:30+0200",
    ]


def test_a_fixed_time_in_the_repeated_hour_runs_once():
    cron = Cron("30 2 * * *", PARIS)
    got = fires(cron, utc(2026, 10, 24, 12), 2)
    assert local(got, cron) == ["10-25 02:30+0200", "10-26 02:30+0100"]


def test_an_every_hour_job_runs_in_both_passes_of_the_repeated_hour():
    cron = Cron("*/30 * * * *", PARIS)
    got = fires(cron, utc(2026, 10, 24, 23, 45), 5)
    assert local(got, cron) == [
        "10-25 02:00+0200",
        "10-25 02:30+0200",
        "10-25 02:00+0100",
        "10-25 02:30+0100",
        "10-25 03:00+0100",
    ]
    assert got == sorted(got) and len(set(got)) == 5


def test_a_zone_with_a_30_minute_shift():
    cron = Cron("15 2 * * *", "Australia/Lord_Howe")  # +10:30 <-> +11:00
    days = fires(cron, utc(2026, 10, 2), 3)
    assert len({t.astimezone(cron.tz).date() for t in days}) == 3


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * *", "has 3 fields"),
        ("60 * * * *", "minute: 60 is outside 0-59"),
        ("* 24 * * *", "hour: 24 is outside 0-23"),
        ("* * 0 * *", "day of month: 0 is outside 1-31"),
        ("* * * 13 *", "month: 13 is outside 1-12"),
        ("* * * * 8", "day of week: 8 is outside 0-7"),
        ("*/0 * * * *", "step must be at least 1"),
        ("5-1 * * * *", "runs backwards"),
        ("x * * * *", "minute: 'x' is not a number"),
        ("0 0 30 2 *", "never matches"),
        ("0 0 31 4,6 *", "never matches"),
    ],
)
def test_bad_expressions_say_what_is_wrong(expression, message):
    with pytest.raises(CronError, match=message):
        Cron(expression)


def test_an_unknown_time_zone():
    with pytest.raises(CronError, match="unknown time zone 'Mars/Olympus'"):
        Cron("* * * * *", "Mars/Olympus")
    assert issubclass(CronError, ValueError)
