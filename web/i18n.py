"""Translations and date formatting.  Vietnamese first (full diacritics, NFC), English too.

Catalogs are JSON objects ``{"key": "text with {placeholders}"}`` merged from every file in
``web/locale/<lang>/*.json`` (one file per area: panel.json, meetings.json, meeting.json), so
each area adds its strings without touching the others'.  A key missing in a language falls
back to Vietnamese, then to the key itself (and is logged once).

In templates: ``{{ t("nav.meetings") }}``, ``{{ fmt_datetime(dt) }}``; in Python:
``translator(request).t("key", name=...)``.  The request's language is chosen by
``?lang=vi|en`` (remembered in a cookie), else the user's saved choice, else
``general.language``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import unicodedata
import zoneinfo
from functools import lru_cache
from importlib import resources
from typing import Any

LANGUAGES = ("vi", "en")
log = logging.getLogger("web.i18n")

_VI_WEEKDAYS = ("Thứ Hai", "Thứ Ba", "Thứ Tư", "Thứ Năm", "Thứ Sáu", "Thứ Bảy", "Chủ Nhật")
_EN_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_EN_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
              "October", "November", "December")


@lru_cache(maxsize=None)
def catalog(lang: str) -> dict[str, str]:
    merged: dict[str, str] = {}
    folder = resources.files("web") / "locale" / lang
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            data = json.loads(entry.read_text(encoding="utf-8"))
            for k, v in data.items():
                merged[k] = unicodedata.normalize("NFC", v)
    return merged


class Translator:
    def __init__(self, lang: str, tz: str):
        self.lang = lang if lang in LANGUAGES else "vi"
        self.tz = zoneinfo.ZoneInfo(tz)
        self._missing: set[str] = set()

    def t(self, key: str, **args: Any) -> str:
        text = catalog(self.lang).get(key) or catalog("vi").get(key)
        if text is None:
            if key not in self._missing:
                self._missing.add(key)
                log.warning("missing translation", extra={"key": key, "lang": self.lang})
            text = key
        return text.format(**args) if args else text

    def local(self, t: dt.datetime) -> dt.datetime:
        return t.astimezone(self.tz)

    def fmt_datetime(self, t: dt.datetime) -> str:
        """vi: ``Thứ Hai, 24/11/2026, 14:00``; en: ``Monday, 24 November 2026, 14:00``."""
        return format_datetime(self.local(t), self.lang)

    def fmt_date(self, t: dt.datetime) -> str:
        return format_date(self.local(t), self.lang)

    def fmt_time(self, t: dt.datetime) -> str:
        return self.local(t).strftime("%H:%M")

    def fmt_range(self, start: dt.datetime, end: dt.datetime) -> str:
        """``Thứ Hai, 24/11/2026, 14:00 – 16:00``; with the end's date when it falls on another
        day: ``Thứ Hai, 24/11/2026, 22:00 – Thứ Ba, 25/11/2026, 01:00``."""
        s, e = self.local(start), self.local(end)
        if s.date() == e.date():
            return f"{format_datetime(s, self.lang)} – {e:%H:%M}"
        return f"{format_datetime(s, self.lang)} – {format_datetime(e, self.lang)}"


def format_datetime(local: dt.datetime, lang: str) -> str:
    return f"{format_date(local, lang)}, {local:%H:%M}"


def format_date(local: dt.datetime | dt.date, lang: str) -> str:
    if lang == "en":
        return f"{_EN_WEEKDAYS[local.weekday()]}, {local.day} {_EN_MONTHS[local.month - 1]} {local.year}"
    return f"{_VI_WEEKDAYS[local.weekday()]}, {local.day:02d}/{local.month:02d}/{local.year}"
