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


def occurrence_starts(start: dt.datetime, rule: Recurrence | None, tz: zoneinfo.ZoneInfo) -> list[dt.datetime]:
    """Every occurrence's start (UTC) of a series whose first start is ``start`` (aware)."""
    local = start.astimezone(tz).replace(tzinfo=None)
    if rule is None:
        return [start.astimezone(dt.timezone.utc)]
    kwargs: dict[str, object] = {"dtstart": local, "interval": rule.interval}
    if rule.count is not None:
        kwargs["count"] = rule.count
    else:
        assert rule.until is not None
        kwargs["until"] = dt.datetime.combine(rule.until, dt.time(23, 59, 59))
    if rule.byday:
        kwargs["byweekday"] = [DAYS.index(d) for d in rule.byday]
    out = []
    for naive in du.rrule(FREQS[rule.freq], **kwargs):  # type: ignore[arg-type]
        out.append(naive.replace(tzinfo=tz).astimezone(dt.timezone.utc))
        if len(out) >= MAX_OCCURRENCES:
            break
    return out


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
    return sorted(out, key=lambda o: o.start)
