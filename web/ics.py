"""iCalendar export of a meeting (RFC 5545) with the icalendar library.

One VEVENT for a single meeting or a series (RRULE + EXDATE for cancelled occurrences, plus a
VEVENT with RECURRENCE-ID for each moved occurrence); a stable UID; SEQUENCE bumped on every
change; METHOD:CANCEL and STATUS:CANCELLED when the meeting is cancelled.  Times carry TZID with
the zone's VTIMEZONE.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass, field

import icalendar


@dataclass
class IcsMeeting:
    uid: str
    title: str
    agenda: str
    start: dt.datetime  # aware
    end: dt.datetime
    tz: zoneinfo.ZoneInfo
    sequence: int
    cancelled: bool
    rrule: str = ""
    exdates: list[dt.datetime] = field(default_factory=list)  # UTC originals
    overrides: list[tuple[dt.datetime, dt.datetime, dt.datetime]] = field(default_factory=list)  # (original, start, end)
    location: str = ""
    url: str = ""
    organizer: tuple[str, str] | None = None  # (name, e-mail): the chair site
    attendees: list[tuple[str, str]] = field(default_factory=list)  # (name, e-mail) of invited sites
    updated: dt.datetime | None = None


def _event(m: IcsMeeting, start: dt.datetime, end: dt.datetime) -> icalendar.Event:
    ev = icalendar.Event()
    ev.add("uid", m.uid)
    ev.add("dtstamp", (m.updated or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc))
    ev.add("sequence", m.sequence)
    ev.add("summary", m.title)
    if m.agenda:
        ev.add("description", m.agenda)
    if m.location:
        ev.add("location", m.location)
    if m.url:
        ev.add("url", m.url)
    if m.organizer:
        ev.add("organizer", icalendar.vCalAddress(f"mailto:{m.organizer[1]}"), parameters={"CN": m.organizer[0]})
    # RFC 5546: a PUBLISH carries no ATTENDEE; a CANCEL names whom it cancels for.
    if m.cancelled:
        for name, email in m.attendees:
            ev.add("attendee", icalendar.vCalAddress(f"mailto:{email}"), parameters={"CN": name, "ROLE": "REQ-PARTICIPANT"})
    ev.add("dtstart", start.astimezone(m.tz))
    ev.add("dtend", end.astimezone(m.tz))
    ev.add("status", "CANCELLED" if m.cancelled else "CONFIRMED")
    return ev


def meeting_ics(m: IcsMeeting, product: str = "-//Lien thong//Meetings//VI") -> bytes:
    cal = icalendar.Calendar()
    cal.add("prodid", product)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", "CANCEL" if m.cancelled else "PUBLISH")
    main = _event(m, m.start, m.end)
    if m.rrule:
        main.add("rrule", icalendar.vRecur.from_ical(m.rrule))
        for ex in m.exdates:
            main.add("exdate", ex.astimezone(m.tz))
    cal.add_component(main)
    for original, start, end in m.overrides:
        ev = _event(m, start, end)
        ev.add("recurrence-id", original.astimezone(m.tz))
        cal.add_component(ev)
    cal.add_missing_timezones()
    return bytes(cal.to_ical())
