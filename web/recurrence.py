"""Meeting recurrence: an RFC 5545 RRULE subset, expanded in the meeting's time zone.

Supported: FREQ=DAILY|WEEKLY|MONTHLY, INTERVAL, COUNT or UNTIL (one of them is required: a
series always ends), BYDAY (weekly only).  Expansion is done by python-dateutil on wall-clock
times, then each occurrence is placed in the zone, so a 14:00 meeting stays at 14:00 across a
DST change (RFC 5545 semantics with TZID).  A monthly series on the 31st skips months without
a 31st, as RFC 5545 says.  Occurrences are identified by their original start in UTC (the
RECURRENCE-ID), which overrides and cancellations refer to.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from dataclasses import dataclass, field

from dateutil import rrule as du

FREQS = {"DAILY": du.DAILY, "WEEKLY": du.WEEKLY, "MONTHLY": du.MONTHLY}
DAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
MAX_OCCURRENCES = 500


class RecurrenceError(ValueError):
    pass


@dataclass(frozen=True)
class Recurrence:
    freq: str
    interval: int = 1
    count: int | None = None
    until: dt.date | None = None  # last day (inclusive), in the meeting's zone
    byday: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.freq not in FREQS:
            raise RecurrenceError(f"FREQ must be DAILY, WEEKLY or MONTHLY, got {self.freq!r}")
        if not 1 <= self.interval <= 99:
            raise RecurrenceError("INTERVAL must be 1 to 99")
        if (self.count is None) == (self.until is None):
            raise RecurrenceError("give exactly one of COUNT or UNTIL")
        if self.count is not None and not 1 <= self.count <= MAX_OCCURRENCES:
            raise RecurrenceError(f"COUNT must be 1 to {MAX_OCCURRENCES}")
        if self.byday and self.freq != "WEEKLY":
            raise RecurrenceError("BYDAY is supported with FREQ=WEEKLY only")
        for d in self.byday:
            if d not in DAYS:
                raise RecurrenceError(f"BYDAY values are MO..SU, got {d!r}")

    def to_rrule(self, tz: zoneinfo.ZoneInfo) -> str:
        """The RRULE value; UNTIL in UTC (required with a TZID DTSTART), end of the local day."""
        parts = [f"FREQ={self.freq}"]
        if self.interval != 1:
            parts.append(f"INTERVAL={self.interval}")
        if self.byday:
            parts.append("BYDAY=" + ",".join(self.byday))
        if self.count is not None:
            parts.append(f"COUNT={self.count}")
        if self.until is not None:
            parts.append("UNTIL=" + until_utc(self.until, tz).strftime("%Y%m%dT%H%M%SZ"))
        return ";".join(parts)

    @classmethod
    def parse(cls, text: str, tz: zoneinfo.ZoneInfo) -> Recurrence:
        """Parse our own subset of RRULE (as written by to_rrule)."""
        fields: dict[str, str] = {}
        for part in text.strip().removeprefix("RRULE:").split(";"):
            key, sep, value = part.partition("=")
            if not sep:
                raise RecurrenceError(f"not an RRULE part: {part!r}")
            fields[key.upper()] = value.upper()
        unknown = set(fields) - {"FREQ", "INTERVAL", "COUNT", "UNTIL", "BYDAY"}
        if unknown:
            raise RecurrenceError(f"unsupported RRULE parts: {', '.join(sorted(unknown))}")
        until = None
        if "UNTIL" in fields:
            m = re.fullmatch(r"(\d{8})(T\d{6}Z?)?", fields["UNTIL"])
            if not m:
                raise RecurrenceError("UNTIL must be YYYYMMDD or YYYYMMDDTHHMMSSZ")
            if m.group(2) and m.group(2).endswith("Z"):
                until = dt.datetime.strptime(fields["UNTIL"], "%Y%m%dT%H%M%SZ").replace(
                    tzinfo=dt.timezone.utc).astimezone(tz).date()
            else:
                until = dt.datetime.strptime(m.group(1), "%Y%m%d").date()
        try:
            return cls(freq=fields.get("FREQ", ""), interval=int(fields.get("INTERVAL", "1")),
                       count=int(fields["COUNT"]) if "COUNT" in fields else None, until=until,
                       byday=tuple(d for d in fields.get("BYDAY", "").split(",") if d))
        except ValueError as e:
            raise RecurrenceError(str(e)) from None


def until_utc(until: dt.date, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(until, dt.time(23, 59, 59), tz).astimezone(dt.timezone.utc)


def _rrule(start: dt.datetime, rule: Recurrence, tz: zoneinfo.ZoneInfo) -> du.rrule:
    """The dateutil rule on naive wall-clock times of ``tz``."""
    kwargs: dict[str, object] = {"dtstart": start.astimezone(tz).replace(tzinfo=None), "interval": rule.interval}
    if rule.count is not None:
        kwargs["count"] = rule.count
    else:
        assert rule.until is not None
        kwargs["until"] = dt.datetime.combine(rule.until, dt.time(23, 59, 59))
    if rule.byday:
        kwargs["byweekday"] = [DAYS.index(d) for d in rule.byday]
    return du.rrule(FREQS[rule.freq], **kwargs)  # type: ignore[arg-type]


def occurrence_starts(start: dt.datetime, rule: Recurrence | None, tz: zoneinfo.ZoneInfo) -> list[dt.datetime]:
    """Every occurrence's start (UTC) of a series whose first start is ``start`` (aware)."""
    if rule is None:
        return [start.astimezone(dt.timezone.utc)]
    out = []
    for naive in _rrule(start, rule, tz):
        out.append(naive.replace(tzinfo=tz).astimezone(dt.timezone.utc))
        if len(out) >= MAX_OCCURRENCES:
            break
    return out


def too_many_occurrences(start: dt.datetime, rule: Recurrence | None, tz: zoneinfo.ZoneInfo) -> bool:
    """True when an UNTIL series has more than MAX_OCCURRENCES (COUNT is bounded on its own):
    such a series is refused rather than silently cut short."""
    if rule is None or rule.count is not None:
        return False
    for i, _ in enumerate(_rrule(start, rule, tz)):
        if i >= MAX_OCCURRENCES:
            return True
    return False


@dataclass(frozen=True)
class Occurrence:
    original_start: dt.datetime  # UTC: the RECURRENCE-ID
    start: dt.datetime  # UTC, after any override
    end: dt.datetime
    overridden: bool = False


def expand(start: dt.datetime, end: dt.datetime, rule: Recurrence | None, tz: zoneinfo.ZoneInfo,
           cancelled: set[dt.datetime] | None = None,
           overrides: dict[dt.datetime, tuple[dt.datetime, dt.datetime]] | None = None) -> list[Occurrence]:
    """Occurrences (sorted by start) with cancelled ones left out and overrides applied."""
    duration = end - start
    cancelled = cancelled or set()
    overrides = overrides or {}
    out = []
    for s in occurrence_starts(start, rule, tz):
        if s in cancelled:
            continue
        if s in overrides:
            ns, ne = overrides[s]
            out.append(Occurrence(s, ns, ne, True))
        else:
            out.append(Occurrence(s, s, s + duration))
    return sorted(out, key=lambda o: (o.start, o.original_start))


def _wall(t: dt.datetime, tz: zoneinfo.ZoneInfo, shift: dt.timedelta) -> dt.datetime:
    """``t + shift`` as naive wall-clock time in ``tz``, clamped at the ends of the calendar
    (windows may be open-ended: year 1 to year 9999)."""
    try:
        return (t + shift).astimezone(tz).replace(tzinfo=None)
    except OverflowError:
        return dt.datetime.min if shift < dt.timedelta(0) else dt.datetime.max


def expand_between(start: dt.datetime, end: dt.datetime, rule: Recurrence | None, tz: zoneinfo.ZoneInfo,
                   window_start: dt.datetime, window_end: dt.datetime,
                   cancelled: set[dt.datetime] | None = None,
                   overrides: dict[dt.datetime, tuple[dt.datetime, dt.datetime]] | None = None) -> list[Occurrence]:
    """The occurrences that overlap [window_start, window_end) (sorted by start): the same as
    ``expand()`` filtered to the window, but only occurrences near the window are built, so a
    calendar week costs a few objects whatever the length of the series."""
    duration = end - start
    cancelled = cancelled or set()
    overrides = overrides or {}

    def overlaps(s: dt.datetime, e: dt.datetime) -> bool:
        return e > window_start and s < window_end

    if rule is None:
        originals = [start.astimezone(dt.timezone.utc)]
    else:
        # Wall-clock bounds, one day wider on each side than needed so a DST shift cannot lose
        # an occurrence; the exact test is done in UTC below.
        after = _wall(window_start, tz, -(duration + dt.timedelta(days=1)))
        before = _wall(window_end, tz, dt.timedelta(days=1))
        originals = [n.replace(tzinfo=tz).astimezone(dt.timezone.utc)
                     for n in _rrule(start, rule, tz).between(after, before, inc=True)]
    out = []
    seen = set()
    for s in originals:
        seen.add(s)
        if s in cancelled:
            continue
        if s in overrides:
            ns, ne = overrides[s]
            if overlaps(ns, ne):
                out.append(Occurrence(s, ns, ne, True))
        elif overlaps(s, s + duration):
            out.append(Occurrence(s, s, s + duration))
    # An occurrence moved into the window from outside it.
    for s, (ns, ne) in overrides.items():
        if s not in seen and s not in cancelled and overlaps(ns, ne):
            out.append(Occurrence(s, ns, ne, True))
    return sorted(out, key=lambda o: (o.start, o.original_start))
