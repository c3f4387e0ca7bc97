"""Every API route × every role → expected status.  Extend ROUTES with new routes.

Each row: (method, path, JSON body or None, {role: status}); roles are "anonymous",
"viewer", "unit_admin" (of so-dttg-lao-cai), "system_admin".  Requests use bearer tokens (no
CSRF), and each row runs against a fresh server so rows cannot affect each other.
"""

from __future__ import annotations

from typing import Any

ROLES = ("anonymous", "viewer", "unit_admin", "system_admin")


def expect(anonymous: int, viewer: int, unit_admin: int, system_admin: int) -> dict[str, int]:
    return {"anonymous": anonymous, "viewer": viewer, "unit_admin": unit_admin, "system_admin": system_admin}


ROUTES: list[tuple[str, str, Any, dict[str, int]]] = [
    ("GET", "/api/me", None, expect(401, 200, 200, 200)),
    ("PATCH", "/api/me", {"language": "en"}, expect(401, 200, 200, 200)),
    ("GET", "/api/tokens", None, expect(401, 200, 200, 200)),
    ("POST", "/api/tokens", {"label": "x"}, expect(401, 201, 201, 201)),
    ("GET", "/api/units", None, expect(401, 200, 200, 200)),
    ("GET", "/api/units/vpcp", None, expect(401, 200, 200, 200)),
    ("PATCH", "/api/units/xa-bac-ha-lao-cai", {"name_en": "Bac Ha"}, expect(401, 403, 200, 200)),
    ("PATCH", "/api/units/so-dttg-son-la", {"name_en": "Son La"}, expect(401, 403, 403, 200)),
    ("GET", "/api/accounts", None, expect(401, 403, 403, 200)),
    ("POST", "/api/accounts", {"username": "moi", "password": "a long password", "role": "viewer"},
     expect(401, 403, 403, 201)),
    ("DELETE", "/api/accounts/victim", None, expect(401, 403, 403, 200)),
    ("GET", "/api/audit", None, expect(401, 403, 403, 200)),
    ("GET", "/healthz", None, expect(200, 200, 200, 200)),
    ("GET", "/api/openapi.json", None, expect(200, 200, 200, 200)),
    # Meetings.  {own} is chaired by so-dttg-lao-cai (the unit admin's unit), {central} by bo-dttg.
    ("GET", "/api/meetings", None, expect(401, 200, 200, 200)),
    ("GET", "/api/meetings?when=past&page=2&limit=10&unit=so-dttg-lao-cai", None, expect(401, 200, 200, 200)),
    ("POST", "/api/meetings", "own_body", expect(401, 403, 201, 201)),
    ("POST", "/api/meetings", "central_body", expect(401, 403, 403, 201)),
    ("GET", "/api/meetings/{central}", None, expect(401, 200, 200, 200)),
    ("PATCH", "/api/meetings/{own}", {"title": "Đổi tên"}, expect(401, 403, 200, 200)),
    ("PATCH", "/api/meetings/{central}", {"title": "Đổi tên"}, expect(401, 403, 403, 200)),
    ("POST", "/api/meetings/{own}/links/xa-bac-ha-lao-cai/reissue", {}, expect(401, 403, 200, 200)),
    ("POST", "/api/meetings/{central}/links/so-dttg-hue/revoke", {}, expect(401, 403, 403, 200)),
    ("DELETE", "/api/meetings/{own}", None, expect(401, 403, 200, 200)),
    ("DELETE", "/api/meetings/{central}", None, expect(401, 403, 403, 200)),
    ("GET", "/api/calendar?start=2026-11-23&end=2026-11-30", None, expect(401, 200, 200, 200)),
    ("GET", "/meetings/{central}.ics", None, expect(302, 200, 200, 200)),  # pages send anonymous users to log in
    # One occurrence ({own_occ}, {central_occ}: the occurrence id, i.e. the original start in UTC).
    ("PATCH", "/api/meetings/{own}?occurrence={own_occ}", {"start": "2030-01-02T09:00", "end": "2030-01-02T10:00"},
     expect(401, 403, 200, 200)),
    ("PATCH", "/api/meetings/{central}?occurrence={central_occ}",
     {"start": "2030-01-02T09:00", "end": "2030-01-02T10:00"}, expect(401, 403, 403, 200)),
    ("DELETE", "/api/meetings/{own}?occurrence={own_occ}", None, expect(401, 403, 200, 200)),
    ("DELETE", "/api/meetings/{central}?occurrence={central_occ}", None, expect(401, 403, 403, 200)),
    # A unit admin cannot hand its meeting to a chair outside its subtree.
    ("PATCH", "/api/meetings/{own}", {"chair": "bo-dttg"}, expect(401, 403, 403, 200)),
    ("GET", "/api/meetings/no-such-meeting", None, expect(401, 404, 404, 404)),
    ("GET", "/meetings/{own}", None, expect(302, 200, 200, 200)),
    ("GET", "/calendar?view=month", None, expect(302, 200, 200, 200)),
]
