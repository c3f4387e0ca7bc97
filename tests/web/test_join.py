"""Join links: the resolver's windows and refusals, revocation and re-issue, the join page."""

from __future__ import annotations

import datetime as dt

import pytest

from lienthong.store.web import now_utc
from tests.web.conftest import Running, api
from tests.web.meeting_helpers import HCM, admin_session, create_meeting, link_of, local, meeting_body
from web import keys
from web.joins import JoinRefused


def token_of(url: str) -> str:
    return url.rsplit("/j/", 1)[1]


def resolver(running: Running):  # type: ignore[no-untyped-def]
    assert running.server.web is not None and running.server.web.runner is not None
    return running.server.web.runner.app[keys.JOIN_RESOLVER]


async def test_window_early_grace_and_refusals(running: Running) -> None:
    start = (now_utc() + dt.timedelta(days=1)).replace(second=0)
    created = await create_meeting(running, meeting_body(start, minutes=60))
    token = token_of(link_of(created, "so-dttg-lao-cai"))
    r = resolver(running)
    with pytest.raises(JoinRefused) as info:
        await r.resolve(token, now=start - dt.timedelta(minutes=16))
    assert info.value.code == "not_open_yet" and info.value.opens_at == start - dt.timedelta(minutes=15)
    grant = await r.resolve(token, now=start - dt.timedelta(minutes=15))
    assert grant.site_id == "so-dttg-lao-cai" and grant.role == "site" and grant.meeting_id == created["id"]
    assert grant.site_name == "Sở Dân tộc và Tôn giáo tỉnh Lào Cai"
    assert grant.closes_at == start + dt.timedelta(minutes=90)
    assert (await r.resolve(token, now=start + dt.timedelta(minutes=90))).room_id == grant.room_id
    with pytest.raises(JoinRefused) as info:
        await r.resolve(token, now=start + dt.timedelta(minutes=91))
    assert info.value.code == "expired"  # past end + grace: the token itself has expired
    with pytest.raises(JoinRefused) as info:
        await r.resolve(token[:-3] + "abc", now=start)
    assert info.value.code == "invalid" and "không hợp lệ" in info.value.message("vi")
    chair = await r.resolve(token_of(link_of(created, "bo-dttg")), now=start)
    assert chair.role == "chair"


async def test_recurring_meeting_grants_the_current_occurrence(running: Running) -> None:
    start = (now_utc() + dt.timedelta(days=1)).replace(second=0)
    created = await create_meeting(running, meeting_body(start, minutes=60, recurrence={"freq": "DAILY", "count": 3}))
    r = resolver(running)
    token = token_of(link_of(created, "so-dttg-ha-noi"))
    first = await r.resolve(token, now=start)
    second = await r.resolve(token, now=start + dt.timedelta(days=1, minutes=5))
    assert first.room_id != second.room_id
    with pytest.raises(JoinRefused) as info:
        await r.resolve(token, now=start + dt.timedelta(hours=5))
    assert info.value.code == "not_open_yet"


async def test_revoke_reissue_cancel_and_pin(running: Running) -> None:
    start = (now_utc() + dt.timedelta(days=1)).replace(second=0)
    created = await create_meeting(running, meeting_body(start, pin="2468"))
    mid, r = created["id"], resolver(running)
    old = token_of(link_of(created, "so-dttg-son-la"))
    with pytest.raises(JoinRefused) as info:
        await r.resolve(old, now=start)
    assert info.value.code == "pin_required"
    with pytest.raises(JoinRefused) as info:
        await r.resolve(old, pin="1111", now=start)
    assert info.value.code == "pin_wrong"
    assert (await r.resolve(old, pin="2468", now=start)).pin_required
    s = await admin_session(running)
    async with s:
        status, links = await api(s, "POST", f"/api/meetings/{mid}/links/so-dttg-son-la/revoke")
        assert status == 200
        with pytest.raises(JoinRefused) as info:
            await r.resolve(old, pin="2468", now=start)
        assert info.value.code == "revoked"
        status, links = await api(s, "POST", f"/api/meetings/{mid}/links/so-dttg-son-la/reissue")
        new = token_of(next(l["url"] for l in links["links"] if l["site"] == "so-dttg-son-la"))
        assert new != old
        assert (await r.resolve(new, pin="2468", now=start)).site_id == "so-dttg-son-la"
        with pytest.raises(JoinRefused):
            await r.resolve(old, pin="2468", now=start)  # the old token stays dead
        # Dropping a site from the meeting revokes its link.
        status, _ = await api(s, "PATCH", f"/api/meetings/{mid}", json={"sites": ["so-dttg-ha-noi"]})
        with pytest.raises(JoinRefused) as info:
            await r.resolve(new, pin="2468", now=start)
        assert info.value.code == "revoked"
        status, _ = await api(s, "DELETE", f"/api/meetings/{mid}")
        hanoi = token_of(link_of(created, "so-dttg-ha-noi"))
        with pytest.raises(JoinRefused) as info:
            await r.resolve(hanoi, pin="2468", now=start)
        assert info.value.code == "cancelled"


async def test_join_page_states(running: Running) -> None:
    soon = now_utc() + dt.timedelta(minutes=5)
    later = now_utc() + dt.timedelta(days=2)
    open_meeting = await create_meeting(running, meeting_body(soon))
    future = await create_meeting(running, meeting_body(later))
    async with running.client() as s:  # anonymous: the link is the credential
        async with s.get("/j/" + token_of(link_of(open_meeting, "so-dttg-lao-cai"))) as r:
            html = await r.text()
            assert r.status == 200 and 'id="join"' in html and "Sở Dân tộc và Tôn giáo tỉnh Lào Cai" in html
            assert 'data-href="/m/' in html
        async with s.get("/j/" + token_of(link_of(future, "so-dttg-lao-cai"))) as r:
            html = await r.text()
            assert r.status == 200 and 'id="not-open"' in html and "Cuộc họp chưa mở" in html
            opens = (later - dt.timedelta(minutes=15)).astimezone(HCM)
            assert f"{opens:%d/%m/%Y}" in html
            # It reloads itself, at the latest an hour later (the meeting opens in ~2 days).
            assert '<meta http-equiv="refresh" content="3600">' in html
        async with s.get("/j/not-a-token?lang=en") as r:
            html = await r.text()
            assert r.status == 404 and "This join link is not valid." in html and "Traceback" not in html


async def test_links_already_sent_survive_a_postponed_meeting(running: Running) -> None:
    start = (now_utc() + dt.timedelta(days=1)).replace(second=0, microsecond=0)
    created = await create_meeting(running, meeting_body(start, minutes=60))
    token = token_of(link_of(created, "so-dttg-son-la"))  # as mailed out before the change
    later = start + dt.timedelta(days=2)
    s = await admin_session(running)
    async with s:
        status, _ = await api(s, "PATCH", f"/api/meetings/{created['id']}",
                              json={"start": local(later), "end": local(later + dt.timedelta(hours=1))})
        assert status == 200
    r = resolver(running)
    # Past the token's own expiry, but the meeting now lies ahead: not open yet, not expired.
    with pytest.raises(JoinRefused) as info:
        await r.resolve(token, now=start + dt.timedelta(hours=3))
    assert info.value.code == "not_open_yet" and info.value.opens_at == later - dt.timedelta(minutes=15)
    grant = await r.resolve(token, now=later)
    assert grant.site_id == "so-dttg-son-la"
    with pytest.raises(JoinRefused) as info:
        await r.resolve(token, now=later + dt.timedelta(minutes=91))
    assert info.value.code == "expired"


async def test_wrong_pins_are_throttled_per_link(running: Running) -> None:
    start = (now_utc() + dt.timedelta(days=1)).replace(second=0, microsecond=0)
    created = await create_meeting(running, meeting_body(start, pin="975310"))
    r = resolver(running)
    lao_cai, ha_noi = token_of(link_of(created, "so-dttg-lao-cai")), token_of(link_of(created, "so-dttg-ha-noi"))
    for i in range(5):
        with pytest.raises(JoinRefused) as info:
            await r.resolve(lao_cai, pin=f"{i:04d}", now=start)
        assert info.value.code == "pin_wrong"
    with pytest.raises(JoinRefused) as info:  # even the right PIN, for a while
        await r.resolve(lao_cai, pin="975310", now=start + dt.timedelta(minutes=1))
    assert info.value.code == "pin_throttled" and "PIN" in info.value.message("vi")
    assert (await r.resolve(ha_noi, pin="975310", now=start)).site_id == "so-dttg-ha-noi"  # other links unaffected
    assert (await r.resolve(lao_cai, pin="975310", now=start + dt.timedelta(minutes=10))).site_id == "so-dttg-lao-cai"


def test_pin_throttle_window_slides() -> None:
    from web.joinlinks import PinThrottle

    t0 = dt.datetime(2026, 11, 24, 7, 0, tzinfo=dt.UTC)
    p = PinThrottle(limit=3, window=dt.timedelta(minutes=10))
    for m in (0, 4, 8):
        assert not p.blocked("a", t0 + dt.timedelta(minutes=m))
        p.failed("a", t0 + dt.timedelta(minutes=m))
    assert p.blocked("a", t0 + dt.timedelta(minutes=9))
    assert not p.blocked("a", t0 + dt.timedelta(minutes=10))  # the first failure has left the window
    assert not p.blocked("b", t0 + dt.timedelta(minutes=9))
    p.failed("a", t0 + dt.timedelta(minutes=11))
    assert p.blocked("a", t0 + dt.timedelta(minutes=12))
    p.succeeded("a")
    assert not p.blocked("a", t0 + dt.timedelta(minutes=12))


async def test_site_invited_again_gets_a_fresh_link_and_edits_keep_revocations(running: Running) -> None:
    start = (now_utc() + dt.timedelta(days=1)).replace(second=0, microsecond=0)
    created = await create_meeting(running, meeting_body(start))
    mid, r = created["id"], resolver(running)
    son_la = token_of(link_of(created, "so-dttg-son-la"))
    s = await admin_session(running)
    async with s:
        # Ha Noi's link is revoked by hand; an edit of the site list must not bring it back.
        status, _ = await api(s, "POST", f"/api/meetings/{mid}/links/so-dttg-ha-noi/revoke")
        assert status == 200
        status, _ = await api(s, "PATCH", f"/api/meetings/{mid}", json={"sites": ["so-dttg-ha-noi", "so-dttg-lao-cai"]})
        assert status == 200
        status, got = await api(s, "GET", f"/api/meetings/{mid}")
        links = {l["site"]: l for l in got["links"]}
        assert links["so-dttg-ha-noi"]["revoked"] is True and "so-dttg-son-la" not in links
        with pytest.raises(JoinRefused) as info:
            await r.resolve(son_la, now=start)
        assert info.value.code == "revoked"
        # Son La invited again: a new, working link; the one sent before stays dead.
        status, _ = await api(s, "PATCH", f"/api/meetings/{mid}",
                              json={"sites": ["so-dttg-ha-noi", "so-dttg-lao-cai", "so-dttg-son-la"]})
        status, got = await api(s, "GET", f"/api/meetings/{mid}")
        fresh = token_of(next(l["url"] for l in got["links"] if l["site"] == "so-dttg-son-la"))
        assert fresh != son_la and (await r.resolve(fresh, now=start)).site_id == "so-dttg-son-la"
        with pytest.raises(JoinRefused):
            await r.resolve(son_la, now=start)
        assert next(l for l in got["links"] if l["site"] == "so-dttg-ha-noi")["revoked"] is True
