"""Meetings: create, edit (series or one occurrence), cancel, list, calendar, .ics, join links,
and the join page ``/j/{token}``.  Sets ``keys.JOIN_RESOLVER``.

Permissions: everyone logged in reads; a system admin manages every meeting; a unit admin
manages meetings whose chair site is in its unit's subtree; a viewer manages none.

JSON API (all under the panel's auth, CSRF and error conventions; described for machines in
``web/openapi.json``, served at /api/openapi.json):
  GET    /api/meetings?when=upcoming|past|all&unit=ID&page=N&limit=N   (web/meeting_lists.py)
  POST   /api/meetings                      body: see ``parse_meeting``
  GET    /api/meetings/{id}                 with occurrences and join links
  PATCH  /api/meetings/{id}                 the series (same body, every field optional)
  PATCH  /api/meetings/{id}?occurrence=T    move one occurrence: {"start": ..., "end": ...}
  DELETE /api/meetings/{id}[?occurrence=T]  cancel the series, or one occurrence
  POST   /api/meetings/{id}/links/{unit}/revoke | /reissue
  GET    /api/calendar?start=YYYY-MM-DD&end=YYYY-MM-DD[&unit=ID]
  GET    /meetings/{id}.ics
Times in bodies are local wall-clock dates and times in ``general.timezone``
("2026-11-24T14:00"); the end may fall on a later day than the start (a meeting crossing
midnight), up to ``schedule.MAX_DURATION`` after it.  Occurrence ids ``T`` are the original
start in UTC ("2026-11-24T07:00:00Z").

Editing the series' start keeps each cancelled/moved occurrence on the same (n-th) occurrence;
changing its rule drops them (``rekeyed_exceptions``).  Dropping a site revokes its link;
inviting it again issues a fresh one.  Every change bumps the iCalendar SEQUENCE.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import zoneinfo
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from lienthong.store.meetings import Meeting
from lienthong.store.web import Account, Unit, now_utc, parse_utc, utc_text
from web import auth, keys, meeting_lists
from web.audit import audit
from web.errors import ApiError
from web.ics import IcsMeeting, meeting_ics
from web.joinlinks import StoreJoinResolver
from web.joins import JoinRefused
from web.panel import render, tr
from web.recurrence import DAYS, Occurrence, MAX_OCCURRENCES, Recurrence, RecurrenceError, occurrence_starts, too_many_occurrences
from web.schedule import MAX_DURATION, occurrences, occurrences_between, recurrence_of, span
from web.tokens import load_or_create_secret
from web.units import subtree, tree_rows

RESOLVER: web.AppKey[StoreJoinResolver] = web.AppKey("store_join_resolver", StoreJoinResolver)


def _tz(request: web.Request) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(request.app[keys.CONFIG].general.timezone)


def _bad(detail: str) -> ApiError:
    return ApiError(400, "bad_meeting", "meetings.bad", detail=detail)


def check_times(start: dt.datetime, end: dt.datetime) -> None:
    """A meeting's (or one occurrence's) times: the end after the start, at most MAX_DURATION
    later; the end may be on the next day."""
    if end <= start:
        raise ApiError(400, "bad_meeting", "meetings.end_before_start")
    if end - start > MAX_DURATION:
        raise ApiError(400, "bad_meeting", "meetings.too_long", hours=int(MAX_DURATION.total_seconds() // 3600))


# -- input -------------------------------------------------------------------------------------

@dataclass
class MeetingInput:
    title: str
    agenda: str
    start: dt.datetime  # UTC
    end: dt.datetime
    chair: str
    sites: dict[str, str]  # unit id -> role (chair included)
    pin: str | None  # None: unchanged; "": none
    rrule: str


def _local(value: Any, tz: zoneinfo.ZoneInfo, name: str) -> dt.datetime:
    if not isinstance(value, str):
        raise _bad(f"{name}: YYYY-MM-DDTHH:MM")
    try:
        t = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise _bad(f"{name}: YYYY-MM-DDTHH:MM, got {value!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=tz)
    return t.astimezone(dt.timezone.utc)


def parse_meeting(body: dict[str, Any], tz: zoneinfo.ZoneInfo, units: list[Unit],
                  previous: Meeting | None = None) -> MeetingInput:
    """Validate a meeting body (API JSON, or a form turned into the same shape).

    {"title", "agenda", "start", "end", "chair", "sites": [ids], "observers": [ids],
     "all_provincial": bool, "children_of": [ids], "pin": "1234" | "",
     "recurrence": null | {"freq": "DAILY|WEEKLY|MONTHLY", "interval": 1, "count": N | "until": "YYYY-MM-DD",
                           "byday": ["MO", ...]}}
    With ``previous`` (an edit), missing fields keep their value.
    """
    known = {"title", "agenda", "start", "end", "chair", "sites", "observers", "all_provincial", "children_of",
             "pin", "recurrence"}
    unknown = set(body) - known
    if unknown:
        raise _bad("unknown fields: " + ", ".join(sorted(unknown)))
    by_id = {u.id: u for u in units}

    def text(name: str, default: str, limit: int) -> str:
        v = body.get(name, default)
        if not isinstance(v, str) or len(v) > limit:
            raise _bad(f"{name}: text up to {limit} characters")
        return v.strip()

    title = text("title", previous.title if previous else "", 200)
    if not title:
        raise _bad("title")
    agenda = text("agenda", previous.agenda if previous else "", 10_000)
    start = _local(body["start"], tz, "start") if "start" in body else (previous.start if previous else None)
    end = _local(body["end"], tz, "end") if "end" in body else (previous.end if previous else None)
    if start is None or end is None:
        raise _bad("start, end")
    check_times(start, end)
    chair = body.get("chair", previous.chair_unit_id if previous else None)
    if chair not in by_id:
        raise _bad(f"chair: a unit id, got {chair!r}")
    if previous is not None and not ({"sites", "observers", "all_provincial", "children_of"} & set(body)):
        sites = dict(previous.sites)
        sites = {u: ("site" if r == "chair" else r) for u, r in sites.items()}
    else:
        sites = {}
        for name, role in (("sites", "site"), ("observers", "observer")):
            ids = body.get(name, [])
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise _bad(f"{name}: a list of unit ids")
            for i in ids:
                if i not in by_id:
                    raise _bad(f"{name}: no unit {i!r}")
                sites[i] = role
        if body.get("all_provincial"):
            for u in units:
                if u.kind == "provincial":
                    sites.setdefault(u.id, "site")
        parents = body.get("children_of", [])
        if not isinstance(parents, list) or not all(isinstance(p, str) and p in by_id for p in parents):
            raise _bad("children_of: a list of unit ids")
        for p in parents:
            for u in units:
                if u.parent_id == p:
                    sites.setdefault(u.id, "site")
    sites[chair] = "chair"
    if len(sites) < 2:
        raise _bad("invite at least one site besides the chair")
    pin = body.get("pin")
    if pin is not None and (not isinstance(pin, str) or (pin and not (pin.isdigit() and 4 <= len(pin) <= 10))):
        raise _bad("pin: 4 to 10 digits, or empty for none")
    if "recurrence" in body:
        rrule = _parse_recurrence(body["recurrence"], tz)
    else:
        rrule = previous.rrule if previous else ""
    # Checked when the rule or the start changes (an old series is not refused a title edit).
    if (rrule and (previous is None or {"recurrence", "start"} & set(body))
            and too_many_occurrences(start, Recurrence.parse(rrule, tz), tz)):
        raise ApiError(400, "bad_meeting", "meetings.too_many", n=MAX_OCCURRENCES)
    return MeetingInput(title, agenda, start, end, str(chair), sites, pin, rrule)


def _parse_recurrence(value: Any, tz: zoneinfo.ZoneInfo) -> str:
    if value in (None, "", {}):
        return ""
    if not isinstance(value, dict):
        raise _bad("recurrence: an object or null")
    try:
        until = dt.date.fromisoformat(value["until"]) if value.get("until") else None
        rule = Recurrence(freq=str(value.get("freq", "")).upper(), interval=int(value.get("interval", 1)),
                          count=int(value["count"]) if value.get("count") not in (None, "") else None, until=until,
                          byday=tuple(str(d).upper() for d in value.get("byday", []) or []))
    except (RecurrenceError, ValueError, TypeError) as e:
        raise _bad(f"recurrence: {e}") from None
    return rule.to_rrule(tz)


def form_to_body(form: Any) -> dict[str, Any]:
    """The create/edit form's fields, in parse_meeting's shape.  Start and end each have a date
    (the end's defaults to the start's; ``date`` is the older single-date form)."""
    start_date = form.get("start_date") or form.get("date", "")
    end_date = form.get("end_date") or start_date
    body: dict[str, Any] = {
        "title": form.get("title", ""), "agenda": form.get("agenda", ""),
        "start": f"{start_date}T{form.get('start_time', '')}",
        "end": f"{end_date}T{form.get('end_time', '')}",
        "chair": form.get("chair", ""), "sites": form.getall("sites", []),
        "observers": form.getall("observers", []), "all_provincial": form.get("all_provincial") == "on",
        "children_of": [p for p in form.getall("children_of", []) if p], "pin": form.get("pin", ""),
    }
    freq = form.get("freq", "")
    if freq:
        rec: dict[str, Any] = {"freq": freq, "interval": form.get("interval", "1") or "1",
                               "byday": form.getall("byday", []) if freq == "WEEKLY" else []}
        if form.get("end_kind") == "until":
            rec["until"] = form.get("until", "")
        else:
            rec["count"] = form.get("count", "")
        body["recurrence"] = rec
    else:
        body["recurrence"] = None
    return body


# -- helpers -----------------------------------------------------------------------------------

async def _meeting_or_404(request: web.Request) -> Meeting:
    meeting_id = request.match_info["meeting_id"].removesuffix(".ics")
    m = await request.app[keys.STORE].meetings.get(meeting_id)
    if m is None:
        raise ApiError(404, "not_found", "error.not_found")
    return m


async def _require_manage(request: web.Request, chair_unit_id: str) -> Account:
    user = auth.require_user(request)
    if not await auth.can_manage_unit(request, user, chair_unit_id):
        raise ApiError(403, "forbidden", "error.forbidden")
    return user


def _base_url(request: web.Request) -> str:
    public = request.app[keys.CONFIG].web.public_url
    return public.rstrip("/") if public else str(request.url.origin())


async def _links_json(request: web.Request, m: Meeting) -> list[dict[str, Any]]:
    resolver = request.app[RESOLVER]
    out = []
    for link in await request.app[keys.STORE].meetings.links(m.id):
        if link.unit_id not in m.sites:
            continue
        item: dict[str, Any] = {"site": link.unit_id, "role": link.role, "revoked": link.revoked,
                                "generation": link.generation}
        if not link.revoked:
            item["url"] = f"{_base_url(request)}/j/{resolver.token_for(m, link)}"
        out.append(item)
    return out


def _occ_id(t: dt.datetime) -> str:
    return utc_text(t)


def _local_text(t: dt.datetime, tz: zoneinfo.ZoneInfo) -> str:
    return t.astimezone(tz).strftime("%Y-%m-%dT%H:%M")


def occurrence_json(o: Occurrence, tz: zoneinfo.ZoneInfo) -> dict[str, Any]:
    return {"id": _occ_id(o.original_start), "start": _local_text(o.start, tz), "end": _local_text(o.end, tz),
            "moved": o.overridden}


def meeting_json(m: Meeting, tz: zoneinfo.ZoneInfo, *, with_occurrences: bool = True) -> dict[str, Any]:
    out = {"id": m.id, "title": m.title, "agenda": m.agenda, "start": _local_text(m.start, tz),
           "end": _local_text(m.end, tz), "timezone": m.timezone, "rrule": m.rrule or None, "chair": m.chair_unit_id,
           "status": m.status, "sequence": m.sequence, "pin": bool(m.pin_hash),
           "sites": [{"unit": u, "role": r} for u, r in sorted(m.sites.items())],
           "cancelled_occurrences": sorted(_occ_id(t) for t in m.cancelled_occurrences)}
    if with_occurrences:
        out["occurrences"] = [occurrence_json(o, tz) for o in occurrences(m)]
    return out


async def _pin_hash(pin: str | None) -> str:
    """argon2 (tens of milliseconds) off the event loop; "" for no PIN."""
    return await asyncio.to_thread(auth.hash_password, pin) if pin else ""


async def _create(request: web.Request, body: dict[str, Any]) -> Meeting:
    store = request.app[keys.STORE]
    units = await store.web.units()
    data = parse_meeting(body, _tz(request), units)
    user = await _require_manage(request, data.chair)
    meeting_id = await store.meetings.create(
        title=data.title, agenda=data.agenda, start=data.start, end=data.end,
        timezone=request.app[keys.CONFIG].general.timezone, rrule=data.rrule, chair_unit_id=data.chair,
        sites=data.sites, pin_hash=await _pin_hash(data.pin), created_by=user.username, span_of=span)
    m = await store.meetings.get(meeting_id)
    assert m is not None
    await audit(request, "meeting.create", f"meeting:{m.id}", {"title": m.title, "sites": len(m.sites),
                                                               "rrule": m.rrule})
    return m


async def _update_series(request: web.Request, m: Meeting, body: dict[str, Any]) -> Meeting:
    store = request.app[keys.STORE]
    await _require_manage(request, m.chair_unit_id)
    data = parse_meeting(body, _tz(request), await store.web.units(), previous=m)
    await _require_manage(request, data.chair)
    fields: dict[str, Any] = {"title": data.title, "agenda": data.agenda, "start": data.start, "end": data.end,
                              "rrule": data.rrule, "chair_unit_id": data.chair}
    if data.pin is not None:
        fields["pin_hash"] = await _pin_hash(data.pin)
    await store.meetings.update(m.id, sites=data.sites, exceptions=rekeyed_exceptions(m, data.start, data.rrule),
                                span_of=span, **fields)
    await audit(request, "meeting.update", f"meeting:{m.id}", {"fields": sorted(body)})
    updated = await store.meetings.get(m.id)
    assert updated is not None
    return updated


def rekeyed_exceptions(m: Meeting, new_start: dt.datetime, new_rrule: str) -> dict[dt.datetime, dt.datetime | None]:
    """What becomes of the series' cancelled and moved occurrences when the series changes.

    Exceptions are keyed by their occurrence's original start (the RECURRENCE-ID), so moving
    the series (say 14:00 -> 15:00) would silently bring a cancelled occurrence back.  With the
    same rule, the n-th occurrence keeps its exception; with another rule there is no sensible
    mapping, so exceptions are dropped (as desktop calendars do when a pattern changes).
    """
    if new_start == m.start and new_rrule == m.rrule:
        return {}
    old = m.cancelled_occurrences | set(m.overrides)
    if not old:
        return {}
    tz = zoneinfo.ZoneInfo(m.timezone)
    if new_rrule != m.rrule:
        return dict.fromkeys(old)
    before = occurrence_starts(m.start, recurrence_of(m), tz)
    after = occurrence_starts(new_start, recurrence_of(m), tz)
    index = {t: i for i, t in enumerate(before)}
    return {t: (after[index[t]] if t in index and index[t] < len(after) else None) for t in old}


def _find_occurrence(m: Meeting, occ: str) -> dt.datetime:
    try:
        t = parse_utc(occ)
    except ValueError:
        raise ApiError(404, "no_occurrence", "meetings.no_occurrence") from None
    if t not in {o.original_start for o in occurrences(m)} and t not in m.cancelled_occurrences:
        raise ApiError(404, "no_occurrence", "meetings.no_occurrence")
    return t


async def _move_occurrence(request: web.Request, m: Meeting, occ: str, body: dict[str, Any]) -> None:
    await _require_manage(request, m.chair_unit_id)
    original = _find_occurrence(m, occ)
    if set(body) - {"start", "end"}:
        raise _bad("one occurrence: only start and end change")
    start, end = _local(body.get("start"), _tz(request), "start"), _local(body.get("end"), _tz(request), "end")
    check_times(start, end)
    await request.app[keys.STORE].meetings.set_exception(m.id, original, cancelled=False, start=start, end=end,
                                                         span_of=span)
    await audit(request, "meeting.occurrence.move", f"meeting:{m.id}", {"occurrence": occ, "start": utc_text(start)})


async def _cancel(request: web.Request, m: Meeting, occ: str | None) -> None:
    await _require_manage(request, m.chair_unit_id)
    store = request.app[keys.STORE]
    if occ:
        original = _find_occurrence(m, occ)
        await store.meetings.set_exception(m.id, original, cancelled=True, span_of=span)
        await audit(request, "meeting.occurrence.cancel", f"meeting:{m.id}", {"occurrence": occ})
    else:
        await store.meetings.update(m.id, status="cancelled", span_of=span)
        await audit(request, "meeting.cancel", f"meeting:{m.id}")


async def _link_action(request: web.Request, m: Meeting, unit_id: str, action: str) -> None:
    await _require_manage(request, m.chair_unit_id)
    if unit_id not in m.sites:
        raise ApiError(404, "not_found", "error.not_found")
    repo = request.app[keys.STORE].meetings
    await (repo.revoke_link if action == "revoke" else repo.reissue_link)(m.id, unit_id)
    await audit(request, f"link.{action}", f"meeting:{m.id}", {"site": unit_id})


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "bad_json", "error.bad_request", detail="JSON body") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", "error.bad_request", detail="a JSON object")
    return body


async def _unit_ids(request: web.Request) -> list[str] | None:
    """The ``unit`` filter: that unit's subtree (a meeting matches when it invites one of them)."""
    unit = request.query.get("unit") or None
    if unit is None:
        return None
    return sorted(subtree(await request.app[keys.STORE].web.units(), unit))


def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    try:
        value = int(request.query.get(name, default))
    except ValueError:
        raise _bad(f"{name}: a number {low} to {high}") from None
    if not low <= value <= high:
        raise _bad(f"{name}: a number {low} to {high}")
    return value


LIST_LIMIT = 50
MAX_PAGE = 10_000


async def _list_page(request: web.Request, when: str, limit: int) -> tuple[list[meeting_lists.Listed], int, bool]:
    page = _int_query(request, "page", 1, 1, MAX_PAGE)
    rows, more = await meeting_lists.page(request.app[keys.STORE].meetings, when, now_utc(),
                                          unit_ids=await _unit_ids(request), page=page, limit=limit)
    return rows, page, more


# -- API -----------------------------------------------------------------------------------------

@auth.require()
async def api_list(request: web.Request) -> web.Response:
    when = request.query.get("when", "upcoming")
    if when not in meeting_lists.WHENS:
        raise _bad("when: upcoming, past or all")
    tz = _tz(request)
    limit = _int_query(request, "limit", LIST_LIMIT, 1, 200)
    rows, page, more = await _list_page(request, when, limit)
    return web.json_response({
        "meetings": [{**meeting_json(r.meeting, tz, with_occurrences=False),
                      "occurrence": occurrence_json(r.occurrence, tz) if r.occurrence else None} for r in rows],
        "page": page, "limit": limit, "has_more": more})


@auth.require("system_admin", "unit_admin")
async def api_create(request: web.Request) -> web.Response:
    m = await _create(request, await _json_body(request))
    return web.json_response({**meeting_json(m, _tz(request)), "links": await _links_json(request, m)}, status=201)


@auth.require()
async def api_get(request: web.Request) -> web.Response:
    m = await _meeting_or_404(request)
    out = meeting_json(m, _tz(request))
    user = auth.require_user(request)
    if await auth.can_manage_unit(request, user, m.chair_unit_id):
        out["links"] = await _links_json(request, m)
    return web.json_response(out)


@auth.require("system_admin", "unit_admin")
async def api_patch(request: web.Request) -> web.Response:
    m = await _meeting_or_404(request)
    body = await _json_body(request)
    occ = request.query.get("occurrence")
    if occ:
        await _move_occurrence(request, m, occ, body)
        m = await _meeting_or_404(request)
    else:
        m = await _update_series(request, m, body)
    return web.json_response(meeting_json(m, _tz(request)))


@auth.require("system_admin", "unit_admin")
async def api_cancel(request: web.Request) -> web.Response:
    m = await _meeting_or_404(request)
    await _cancel(request, m, request.query.get("occurrence"))
    return web.json_response(meeting_json(await _meeting_or_404(request), _tz(request)))


@auth.require("system_admin", "unit_admin")
async def api_link(request: web.Request) -> web.Response:
    m = await _meeting_or_404(request)
    await _link_action(request, m, request.match_info["unit_id"], request.match_info["action"])
    return web.json_response({"links": await _links_json(request, m)})


def days_touched(o: Occurrence, tz: zoneinfo.ZoneInfo) -> list[dt.date]:
    """The local days an occurrence takes place on (two for 22:00-01:00; an end at midnight
    does not touch the next day)."""
    first = o.start.astimezone(tz).date()
    last = (o.end - dt.timedelta(microseconds=1)).astimezone(tz).date()
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


async def calendar_occurrences(request: web.Request, first: dt.date, last: dt.date) -> list[tuple[Occurrence, Meeting]]:
    """Occurrences overlapping the local days [first, last), of meetings selected in SQL."""
    tz = _tz(request)
    start = dt.datetime.combine(first, dt.time(), tz)
    end = dt.datetime.combine(last, dt.time(), tz)
    out: list[tuple[Occurrence, Meeting]] = []
    for m in await request.app[keys.STORE].meetings.overlapping(start, end, unit_ids=await _unit_ids(request)):
        out.extend((o, m) for o in occurrences_between(m, start, end))
    return sorted(out, key=lambda i: (i[0].start, i[1].id))


@auth.require()
async def api_calendar(request: web.Request) -> web.Response:
    tz = _tz(request)
    try:
        first = dt.date.fromisoformat(request.query["start"])
        last = dt.date.fromisoformat(request.query["end"])
    except (KeyError, ValueError):
        raise _bad("start, end: YYYY-MM-DD") from None
    if not first < last <= first + dt.timedelta(days=62):
        raise _bad("end after start, 62 days at most")
    items = [{"meeting": m.id, "title": m.title, "occurrence": _occ_id(o.original_start),
              "start": _local_text(o.start, tz), "end": _local_text(o.end, tz),
              "days": [d.isoformat() for d in days_touched(o, tz)]}
             for o, m in await calendar_occurrences(request, first, last)]
    return web.json_response({"occurrences": items})


@auth.require()
async def ics(request: web.Request) -> web.Response:
    m = await _meeting_or_404(request)
    store = request.app[keys.STORE]
    units = {u.id: u for u in await store.web.units()}
    chair = units.get(m.chair_unit_id)
    occ = occurrences(m)
    body = meeting_ics(IcsMeeting(
        uid=f"{m.id}@lienthong", title=m.title, agenda=m.agenda, start=m.start, end=m.end,
        tz=zoneinfo.ZoneInfo(m.timezone), sequence=m.sequence, cancelled=m.status == "cancelled", rrule=m.rrule,
        exdates=sorted(m.cancelled_occurrences),
        overrides=[(o.original_start, o.start, o.end) for o in occ if o.overridden],
        location=chair.name if chair else "", url=f"{_base_url(request)}/meetings/{m.id}", updated=m.updated_at,
        organizer=(chair.name, chair.emails[0]) if chair and chair.emails else None,
        attendees=[(units[u].name, e) for u in sorted(m.sites) if u != m.chair_unit_id and u in units
                   for e in units[u].emails[:1]]))
    return web.Response(body=body, content_type="text/calendar", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="meeting-{m.id}.ics"'})


# -- pages ---------------------------------------------------------------------------------------

@auth.require()
async def list_page(request: web.Request) -> web.Response:
    when = request.query.get("when", "upcoming")
    when = when if when in ("upcoming", "past") else "upcoming"
    unit = request.query.get("unit") or None
    store = request.app[keys.STORE]
    listed, page, more = await _list_page(request, when, LIST_LIMIT)
    rows = [(r.meeting, r.occurrence) for r in listed]
    units = await store.web.units()
    return render(request, "meetings_list.html", {"rows": rows, "when": when, "unit": unit, "page": page, "more": more,
                                                  "unit_rows": tree_rows(units),
                                                  "names": {u.id: u.display_name(tr(request).lang) for u in units}})


async def _form_context(request: web.Request, m: Meeting | None, error: str, body: dict[str, Any] | None) -> dict[str, Any]:
    units = await request.app[keys.STORE].web.units()
    tz = _tz(request)
    values: dict[str, Any] = {"title": "", "agenda": "", "start_date": "", "start_time": "14:00", "end_date": "",
                              "end_time": "16:00",
                              "chair": "", "sites": [], "observers": [], "freq": "", "interval": 1, "count": "",
                              "until": "", "byday": [], "end_kind": "count"}
    if m is not None:
        s, e = m.start.astimezone(tz), m.end.astimezone(tz)
        values.update(title=m.title, agenda=m.agenda, start_date=s.strftime("%Y-%m-%d"), start_time=s.strftime("%H:%M"),
                      end_date=e.strftime("%Y-%m-%d"), end_time=e.strftime("%H:%M"), chair=m.chair_unit_id,
                      sites=[u for u, r in m.sites.items() if r == "site"],
                      observers=[u for u, r in m.sites.items() if r == "observer"])
        if m.rrule:
            rule = Recurrence.parse(m.rrule, tz)
            values.update(freq=rule.freq, interval=rule.interval, count=rule.count or "",
                          until=rule.until.isoformat() if rule.until else "", byday=list(rule.byday),
                          end_kind="until" if rule.until else "count")
    if body is not None:  # re-show what was typed after an error
        for k in ("title", "agenda", "chair", "sites", "observers"):
            values[k] = body.get(k, values[k])
        for k in ("start", "end"):
            date, _, time = str(body.get(k, "")).partition("T")
            values[f"{k}_date"], values[f"{k}_time"] = date, time
    user = auth.require_user(request)
    managed = await auth.managed_units(request, user)
    return {"meeting": m, "v": values, "error": error, "unit_rows": tree_rows(units), "days": DAYS,
            "max_hours": int(MAX_DURATION.total_seconds() // 3600),
            "chair_choices": [(d, u) for d, u in tree_rows(units) if managed is None or u.id in managed]}


@auth.require("system_admin", "unit_admin")
async def new_page(request: web.Request) -> web.Response:
    return render(request, "meeting_form.html", await _form_context(request, None, "", None))


@auth.require("system_admin", "unit_admin")
async def create_submit(request: web.Request) -> web.StreamResponse:
    body = form_to_body(await request.post())
    try:
        m = await _create(request, body)
    except ApiError as e:
        if e.status != 400:
            raise
        return render(request, "meeting_form.html",
                      await _form_context(request, None, tr(request).t(e.message_key, **e.args_), body), status=400)
    raise web.HTTPSeeOther(f"/meetings/{m.id}")


@auth.require()
async def detail_page(request: web.Request) -> web.Response:
    m = await _meeting_or_404(request)
    store = request.app[keys.STORE]
    user = auth.require_user(request)
    manage = await auth.can_manage_unit(request, user, m.chair_unit_id)
    units = {u.id: u for u in await store.web.units()}
    links = await _links_json(request, m) if manage else []
    now = now_utc()
    return render(request, "meeting_detail.html", {
        "m": m, "manage": manage, "links": links, "units": units, "occurrences": occurrences(m),
        "cancelled": sorted(m.cancelled_occurrences), "occ_id": _occ_id, "now": now,
        "tz": _tz(request)})


@auth.require("system_admin", "unit_admin")
async def edit_page(request: web.Request) -> web.Response:
    m = await _meeting_or_404(request)
    await _require_manage(request, m.chair_unit_id)
    return render(request, "meeting_form.html", await _form_context(request, m, "", None))


@auth.require("system_admin", "unit_admin")
async def edit_submit(request: web.Request) -> web.StreamResponse:
    m = await _meeting_or_404(request)
    form = await request.post()
    body = form_to_body(form)
    if not form.get("pin_change"):
        body.pop("pin")
    try:
        await _update_series(request, m, body)
    except ApiError as e:
        if e.status != 400:
            raise
        return render(request, "meeting_form.html",
                      await _form_context(request, m, tr(request).t(e.message_key, **e.args_), body), status=400)
    raise web.HTTPSeeOther(f"/meetings/{m.id}?flash=saved")


@auth.require("system_admin", "unit_admin")
async def cancel_submit(request: web.Request) -> web.StreamResponse:
    m = await _meeting_or_404(request)
    form = await request.post()
    await _cancel(request, m, str(form.get("occurrence", "")) or None)
    raise web.HTTPSeeOther(f"/meetings/{m.id}?flash=cancelled")


@auth.require("system_admin", "unit_admin")
async def move_submit(request: web.Request) -> web.StreamResponse:
    m = await _meeting_or_404(request)
    form = await request.post()
    def text(key: str) -> str:   # a file upload under a field's name counts as empty
        value = form.get(key, "")
        return value if isinstance(value, str) else ""

    start_date = text("start_date") or text("date")
    end_date = text("end_date") or start_date
    try:
        await _move_occurrence(request, m, text("occurrence"),
                               {"start": f"{start_date}T{text('start_time')}",
                                "end": f"{end_date}T{text('end_time')}"})
    except ApiError as e:
        if e.status != 400:
            raise
        raise web.HTTPSeeOther(f"/meetings/{m.id}?flash=bad_move") from None
    raise web.HTTPSeeOther(f"/meetings/{m.id}?flash=moved")


@auth.require("system_admin", "unit_admin")
async def link_submit(request: web.Request) -> web.StreamResponse:
    m = await _meeting_or_404(request)
    await _link_action(request, m, request.match_info["unit_id"], request.match_info["action"])
    raise web.HTTPSeeOther(f"/meetings/{m.id}?flash={request.match_info['action']}d#links")


@auth.require()
async def calendar_page(request: web.Request) -> web.Response:
    tz = _tz(request)
    view = request.query.get("view", "week")
    view = view if view in ("week", "month") else "week"
    try:
        day = dt.date.fromisoformat(request.query["date"]) if "date" in request.query else now_utc().astimezone(tz).date()
    except ValueError:
        raise _bad("date: YYYY-MM-DD") from None
    if view == "week":
        first = day - dt.timedelta(days=day.weekday())
        last = first + dt.timedelta(days=7)
        prev, nxt = first - dt.timedelta(days=7), last
    else:
        month_start = day.replace(day=1)
        first = month_start - dt.timedelta(days=month_start.weekday())
        next_month = (month_start + dt.timedelta(days=32)).replace(day=1)
        last = next_month + dt.timedelta(days=(7 - next_month.weekday()) % 7)
        prev, nxt = (month_start - dt.timedelta(days=1)).replace(day=1), next_month
    # An occurrence is shown on every day it takes place: 22:00-01:00 on both days, the second
    # time as a continuation ("until 01:00").
    by_day: dict[dt.date, list[CalendarEntry]] = {}
    for o, m in await calendar_occurrences(request, first, last):
        for i, d in enumerate(days_touched(o, tz)):
            if first <= d < last:
                by_day.setdefault(d, []).append(CalendarEntry(m, o, continued=i > 0))
    days = [first + dt.timedelta(days=i) for i in range((last - first).days)]
    weeks = [days[i:i + 7] for i in range(0, len(days), 7)]
    unit = request.query.get("unit") or None
    units = await request.app[keys.STORE].web.units()
    return render(request, "calendar.html", {"view": view, "weeks": weeks, "by_day": by_day, "day": day,
                                             "prev": prev, "next": nxt, "today": now_utc().astimezone(tz).date(),
                                             "unit": unit, "unit_rows": tree_rows(units)})


@dataclass
class CalendarEntry:
    meeting: Meeting
    occurrence: Occurrence
    continued: bool  # a day after the occurrence's first


# -- the join page --------------------------------------------------------------------------------

async def join_page(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    resolver = request.app[RESOLVER]
    t = tr(request)
    try:
        grant = await resolver.resolve(token, pin=None)
    except JoinRefused as e:
        if e.code == "pin_required":
            grant = None
            needs_pin = True
        elif e.code == "not_open_yet":
            # The page reloads itself when the window opens (at most hourly, so a long wait
            # still notices an edit of the meeting), so a site can leave it open on the screen.
            assert e.opens_at is not None
            refresh_in = int(min(max((e.opens_at - now_utc()).total_seconds() + 1, 5), 3600))
            return render(request, "join.html", {"state": "not_open", "opens_at": e.opens_at, "token": token,
                                                 "message": e.message(t.lang), "grant": None,
                                                 "info": await _link_info(request, token), "refresh_in": refresh_in})
        else:
            status = {"invalid": 404, "revoked": 403, "expired": 410, "ended": 410, "cancelled": 410}.get(e.code, 400)
            return render(request, "join.html", {"state": "refused", "message": e.message(t.lang), "token": token,
                                                 "grant": None, "opens_at": None, "info": None}, status=status)
    else:
        needs_pin = False
    info = await _link_info(request, token)
    return render(request, "join.html", {"state": "ready", "grant": grant, "token": token, "needs_pin": needs_pin,
                                         "message": "", "opens_at": None, "info": info})


async def _link_info(request: web.Request, token: str) -> dict[str, Any] | None:
    """Title, site and current/next time of a link whose signature is valid (for the page)."""
    from web import tokens

    resolver = request.app[RESOLVER]
    try:
        claims = tokens.verify_signature(resolver.secret, token)  # the resolver has judged expiry
    except tokens.TokenError:
        return None
    store = request.app[keys.STORE]
    m = await store.meetings.get(claims.meeting_id)
    unit = await store.web.unit(claims.site_id)
    if m is None or unit is None:
        return None
    now = now_utc()
    occ = next((o for o in occurrences(m) if o.end + resolver.grace >= now), None)
    return {"title": m.title, "agenda": m.agenda, "site": unit.display_name(tr(request).lang), "role": claims.role,
            "start": occ.start if occ else m.start, "end": occ.end if occ else m.end}


async def recompute_spans(app: web.Application) -> None:
    """At start-up: the exact span of meetings written before spans were kept."""
    repo = app[keys.STORE].meetings
    for m in await repo.spans_to_recompute():
        await repo.set_span(m.id, span(m))


def setup(app: web.Application) -> None:
    app.on_startup.append(recompute_spans)
    config = app[keys.CONFIG]
    secret = load_or_create_secret(config.state_path / "secrets" / "join-token.key")
    resolver = StoreJoinResolver(app[keys.STORE], secret, config)
    app[RESOLVER] = resolver
    app[keys.JOIN_RESOLVER] = resolver
    r = app.router
    r.add_get("/meetings", list_page)
    r.add_get("/meetings/new", new_page)
    r.add_post("/meetings", create_submit)
    r.add_get("/meetings/{meeting_id}.ics", ics)
    r.add_get("/meetings/{meeting_id}", detail_page)
    r.add_get("/meetings/{meeting_id}/edit", edit_page)
    r.add_post("/meetings/{meeting_id}/edit", edit_submit)
    r.add_post("/meetings/{meeting_id}/cancel", cancel_submit)
    r.add_post("/meetings/{meeting_id}/move", move_submit)
    r.add_post("/meetings/{meeting_id}/links/{unit_id}/{action:revoke|reissue}", link_submit)
    r.add_get("/calendar", calendar_page)
    r.add_get("/j/{token}", join_page)
    r.add_get("/api/meetings", api_list)
    r.add_post("/api/meetings", api_create)
    r.add_get("/api/meetings/{meeting_id}", api_get)
    r.add_patch("/api/meetings/{meeting_id}", api_patch)
    r.add_delete("/api/meetings/{meeting_id}", api_cancel)
    r.add_post("/api/meetings/{meeting_id}/links/{unit_id}/{action:revoke|reissue}", api_link)
    r.add_get("/api/calendar", api_calendar)
