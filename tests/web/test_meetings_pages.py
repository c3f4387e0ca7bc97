"""Lists a page at a time through the real API and panel (page/limit, next/previous, the unit
filter kept), and spans of meetings written before spans were kept."""

from __future__ import annotations

import datetime as dt

from lienthong.store.meetings import MAX_TIME, MIN_TIME
from lienthong.store.web import now_utc
from tests.web.conftest import Running, api
from tests.web.meeting_helpers import admin_session, create_meeting, meeting_body
from web import meetings as web_meetings


async def test_api_and_panel_pages(running: Running) -> None:
    now = now_utc().replace(second=0)
    future = [await create_meeting(running, meeting_body(now + dt.timedelta(days=1 + i), title=f"Giao ban {i}"))
              for i in range(5)]
    # A weekly series begun three weeks ago: listed by its next occurrence, between the others.
    series = await create_meeting(running, meeting_body(now - dt.timedelta(days=21) + dt.timedelta(days=2, hours=12),
                                                        title="Giao ban tuần", recurrence={"freq": "WEEKLY", "count": 6}))
    past = [await create_meeting(running, meeting_body(now - dt.timedelta(days=10 + i), title=f"Đã họp {i}"))
            for i in range(3)]
    hue = await create_meeting(running, meeting_body(now + dt.timedelta(hours=30), title="Họp Huế", sites=["so-dttg-hue"]))
    s = await admin_session(running)
    async with s:
        order = [future[0]["id"], hue["id"], future[1]["id"], series["id"], future[2]["id"], future[3]["id"],
                 future[4]["id"]]
        got, page = [], 1
        while True:
            status, body = await api(s, "GET", f"/api/meetings?when=upcoming&limit=3&page={page}")
            assert status == 200 and (body["page"], body["limit"]) == (page, 3)
            got += [m["id"] for m in body["meetings"]]
            if not body["has_more"]:
                break
            page += 1
        assert got == order and page == 3
        status, body = await api(s, "GET", "/api/meetings?when=upcoming&limit=3&page=2")
        listed = body["meetings"][0]
        assert listed["id"] == series["id"] and listed["occurrence"] == series["occurrences"][3]
        assert "occurrences" not in listed  # a list carries each meeting's next occurrence only
        status, body = await api(s, "GET", "/api/meetings?when=past")
        assert [m["id"] for m in body["meetings"]] == [p["id"] for p in past] and body["has_more"] is False
        status, body = await api(s, "GET", "/api/meetings?when=upcoming&unit=so-dttg-hue")
        assert [m["id"] for m in body["meetings"]] == [hue["id"]]
        status, body = await api(s, "GET", "/api/meetings?when=all&limit=100")
        assert len(body["meetings"]) == 10
        for query in ("page=0", "limit=0", "limit=201", "page=x", "when=soon"):
            status, err = await api(s, "GET", f"/api/meetings?{query}&lang=en")
            assert status == 400 and err["error"]["code"] == "bad_meeting", query
        # The panel: 50 a page; with the unit filter, the pager keeps it.
        for i in range(50):
            await running.store.meetings.create(
                title=f"Họp xã {i}", agenda="", start=now + dt.timedelta(days=3, minutes=i),
                end=now + dt.timedelta(days=3, minutes=i + 30), timezone="Asia/Ho_Chi_Minh", rrule="",
                chair_unit_id="bo-dttg", sites={"bo-dttg": "chair", "xa-bac-ha-lao-cai": "site"}, pin_hash="",
                created_by="t", span_of=web_meetings.span)
        async with s.get("/meetings?when=upcoming&unit=so-dttg-lao-cai") as r:
            html = await r.text()
        assert html.count('<td><a href="/meetings/') == 50 and 'id="page-prev"' not in html
        assert 'href="/meetings?when=upcoming&unit=so-dttg-lao-cai&page=2" rel="next"' in html
        async with s.get("/meetings?when=upcoming&unit=so-dttg-lao-cai&page=2&lang=vi") as r:
            html = await r.text()
        # Page 2: the 56 meetings inviting Lào Cai or its communes, less the first 50.
        assert html.count('<td><a href="/meetings/') == 6
        assert 'id="page-next"' not in html and 'id="page-prev"' in html and "Trang 2" in html
        assert "Họp Huế" not in html


async def test_spans_written_before_are_recomputed_at_start_up(running: Running) -> None:
    start = now_utc() + dt.timedelta(days=2)
    repo = running.store.meetings
    mid = await repo.create(title="Cũ", agenda="", start=start, end=start + dt.timedelta(hours=1),
                            timezone="Asia/Ho_Chi_Minh", rrule="FREQ=DAILY;COUNT=3", chair_unit_id="bo-dttg",
                            sites={"bo-dttg": "chair", "vpcp": "site"}, pin_hash="", created_by="t")
    m = await repo.get(mid)
    assert m is not None and m.span_end == MAX_TIME  # no span_of: the widest safe span
    await repo.set_span(mid, (MIN_TIME, MAX_TIME))
    assert running.server.web is not None and running.server.web.runner is not None
    await web_meetings.recompute_spans(running.server.web.runner.app)
    m = await repo.get(mid)
    assert m is not None and (m.span_start, m.span_end) == (start, start + dt.timedelta(days=2, hours=1))
