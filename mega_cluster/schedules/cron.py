"""Five-field cron expressions, evaluated in a time zone, DST-correct.

``minute hour day-of-month month day-of-week``, as in crontab(5): ``*``, numbers,
ranges ``a-b``, steps ``*/n`` and ``a-b/n``, lists ``a,b``, month and weekday
names (``jan``, ``mon``), weekday 0 or 7 for Sunday, and the macros ``@hourly``,
``@daily`` (``@midnight``), ``@weekly``, ``@monthly``, ``@yearly``
(``@annually``). When both day fields are restricted a day matches either one
(Vixie cron's rule).

Daylight saving time follows Vixie cron: a job at a fixed hour runs once a day
even when its wall time is skipped (spring forward: it runs when the clocks
jump, at the first wall time after the gap) or repeated (fall back: it runs on
the first pass only); a job whose hour field is ``*`` follows real time (it
runs in each pass of a repeated hour and not in a skipped one).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from zoneinfo import ZoneInfo

UTC = dt.UTC
_MONTHS = "jan feb mar apr may jun jul aug sep oct nov dec".split()
_DAYS = "sun mon tue wed thu fri sat".split()
MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
#: (name, lowest, highest, names) per field
_FIELDS = (
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day of month", 1, 31, None),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
_ITEM = re.compile(r"\A(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(\d+))?\Z")
#: Longest a search looks ahead before saying the expression never matches.
_HORIZON_DAYS = 366 * 8 + 2
#: Most a zone's UTC offset changes at once (the window searched around a gap).
_MAX_SHIFT = dt.timedelta(hours=3)
_AROUND = (-_MAX_SHIFT, dt.timedelta(0), _MAX_SHIFT)


class CronError(ValueError):
    """A cron expression that cannot be parsed or never matches."""


def _value(text: str, field: str, low: int, high: int, names: list[str] | None) -> int:
    if names is not None and text in names:
        return names.index(text) + (1 if field == "month" else 0)
    if not text.isdigit():
        raise CronError(
            f"{field}: {text!r} is not a number" + (" or a name" if names else "")
        )
    number = int(text)
    if not low <= number <= high:
        raise CronError(f"{field}: {number} is outside {low}-{high}")
    return number


def _field(text: str, index: int) -> tuple[frozenset[int], bool]:
    """The values one field allows, and whether it is unrestricted (``*``)."""
    field, low, high, names = _FIELDS[index]
    values: set[int] = set()
    for item in text.split(","):
        match = _ITEM.match(item)
        if match is None:
            raise CronError(f"{field}: cannot read {item!r}")
        span, step_text = match.groups()
        step = int(step_text) if step_text else 1
        if step < 1:
            raise CronError(f"{field}: step must be at least 1, got {step}")
        if span == "*":
            first, last = low, high
        elif "-" in span:
            first_text, last_text = span.split("-")
            first = _value(first_text, field, low, high, names)
            last = _value(last_text, field, low, high, names)
            if first > last:
                raise CronError(f"{field}: range {span!r} runs backwards")
        else:
            first = _value(span, field, low, high, names)
            last = high if step_text else first
        values.update(range(first, last + 1, step))
    if index == 4 and 7 in values:  # 7 is Sunday too
        values = (values - {7}) | {0}
    return frozenset(values), text == "*"


class Cron:
    """A parsed expression; :meth:`next_after` gives its next fire time in UTC."""

    def __init__(self, expression: str, tz: str | dt.tzinfo = "UTC") -> None:
        if not isinstance(expression, str):
            raise CronError(f"a cron expression is a string, got {expression!r}")
        text = " ".join(expression.lower().split())
        text = MACROS.get(text, text)
        parts = text.split(" ")
        if len(parts) != 5:
            raise CronError(
                f"{expression!r} has {len(parts)} fields; a cron expression has 5 "
                "(minute hour day-of-month month day-of-week) or is a macro "
                f"({', '.join(MACROS)})"
            )
        fields = [_field(part, i) for i, part in enumerate(parts)]
        self.expression = expression
        self.minutes, self.hours, self.days, self.months, self.weekdays = (
            f[0] for f in fields
        )
        self.every_hour = fields[1][1]
        self.any_day, self.any_weekday = fields[2][1], fields[4][1]
        self.tz = zone(tz)
        if self._next_wall(dt.datetime(2000, 1, 1)) is None:
            raise CronError(f"{expression!r} never matches a date")

    def __repr__(self) -> str:
        return f"Cron({self.expression!r}, {str(self.tz)!r})"

    def _day_matches(self, day: dt.date) -> bool:
        by_day = day.day in self.days
        by_weekday = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return by_day and by_weekday
        return by_day or by_weekday

    def _next_wall(self, wall: dt.datetime) -> dt.datetime | None:
        """The first naive wall time at or after ``wall`` (whole minute) that matches."""
        wall = wall.replace(second=0, microsecond=0)
        limit = wall + dt.timedelta(days=_HORIZON_DAYS)
        while wall <= limit:
            if wall.month not in self.months:
                year, month = divmod(wall.month, 12)
                wall = dt.datetime(wall.year + year, month + 1, 1)
            elif not self._day_matches(wall.date()):
                wall = dt.datetime.combine(wall.date(), dt.time()) + dt.timedelta(
                    days=1
                )
            elif wall.hour not in self.hours:
                wall = wall.replace(minute=0) + dt.timedelta(hours=1)
            elif wall.minute not in self.minutes:
                wall += dt.timedelta(minutes=1)
            else:
                return wall
        return None

    def _instants(self, wall: dt.datetime) -> Iterator[dt.datetime]:
        """The UTC instants at which the wall time ``wall`` fires."""
        first = wall.replace(tzinfo=self.tz, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=self.tz, fold=1).astimezone(UTC)
        if first == second:
            yield first
            return
        exists = first.astimezone(self.tz).replace(tzinfo=None) == wall
        if exists:  # a repeated hour: fold 0 is the first pass
            yield min(first, second)
            if self.every_hour:
                yield max(first, second)
        elif not self.every_hour:  # skipped: it runs when the clocks jump
            yield self._jump(min(first, second), max(first, second), wall)

    def _jump(
        self, low: dt.datetime, high: dt.datetime, wall: dt.datetime
    ) -> dt.datetime:
        """The instant in ``[low, high]`` when the wall clock jumps past ``wall``."""
        while high - low > dt.timedelta(seconds=1):
            middle = low + (high - low) / 2
            if middle.astimezone(self.tz).replace(tzinfo=None) > wall:
                high = middle
            else:
                low = middle
        return high.replace(microsecond=0)

    def next_after(self, after: dt.datetime) -> dt.datetime:
        """The first fire time strictly after ``after`` (aware), in UTC."""
        after = after.astimezone(UTC)
        offsets = {(after + d).astimezone(self.tz).utcoffset() for d in _AROUND}
        # Near a change of offset a wall time before ``after``'s may fire after it.
        back = _MAX_SHIFT if len(offsets) > 1 else dt.timedelta(0)
        wall = after.astimezone(self.tz).replace(tzinfo=None) - back
        best: dt.datetime | None = None
        while True:
            found = self._next_wall(wall)
            if found is None:
                raise CronError(f"{self.expression!r} never matches after {after}")
            if (
                best is not None
                and found > best.astimezone(self.tz).replace(tzinfo=None) + _MAX_SHIFT
            ):
                return best
            for instant in self._instants(found):
                if instant > after and (best is None or instant < best):
                    best = instant
            wall = found + dt.timedelta(minutes=1)


def zone(tz: str | dt.tzinfo) -> dt.tzinfo:
    """A ``tzinfo`` from a zone name (``CronError`` for an unknown one)."""
    if isinstance(tz, dt.tzinfo):
        return tz
    if not isinstance(tz, str) or not tz:
        raise CronError(f"a time zone is a name like 'Europe/Paris', got {tz!r}")
    try:
        return ZoneInfo(tz)
    except (ValueError, KeyError, OSError) as exc:
        raise CronError(f"unknown time zone {tz!r}") from exc
