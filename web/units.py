"""The units file: a hierarchy of any depth, as data.

    [[unit]]
    id = "so-dttg-ha-noi"          # stable: meetings and join links refer to it
    parent = "bo-dttg"             # "" for a root
    name = "Sở Dân tộc và Tôn giáo thành phố Hà Nội"
    name_en = "Hanoi Department of Ethnic and Religious Affairs"
    kind = "provincial"            # central | provincial | local | external
    emails = ["vanthu@sdttg.hanoi.gov.vn"]

Parsing and validation are pure; ``load_units_file`` returns the units parents-first plus a
hash of each unit's file entry (the store keeps panel edits of units the file did not change).
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from lienthong.store.web import Unit

KINDS = ("central", "provincial", "local", "external")
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_KEYS = {"id", "parent", "name", "name_en", "kind", "emails"}


class UnitsError(Exception):
    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


def demo_units_path() -> Path:
    """The demo hierarchy shipped in the package (conf/units.toml links to it)."""
    return Path(str(resources.files("web") / "demo" / "units.toml"))


def parse_units(text: str, where: str) -> tuple[list[Unit], dict[str, str]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UnitsError([f"{where}: not valid TOML: {e}"]) from None
    errors: list[str] = []
    for key in data:
        if key != "unit":
            errors.append(f"{where}: {key}: unknown key (expected [[unit]] tables)")
    entries = data.get("unit", [])
    if not isinstance(entries, list) or not entries:
        errors.append(f"{where}: unit: expected one or more [[unit]] tables")
        raise UnitsError(errors)
    units: dict[str, Unit] = {}
    hashes: dict[str, str] = {}
    for i, entry in enumerate(entries):
        key = f"unit[{i}]"
        if not isinstance(entry, dict):
            errors.append(f"{where}: {key}: expected a table")
            continue
        for k in entry:
            if k not in _KEYS:
                errors.append(f"{where}: {key}.{k}: unknown key (known: {', '.join(sorted(_KEYS))})")
        uid = entry.get("id")
        if not isinstance(uid, str) or not _ID.match(uid):
            errors.append(f"{where}: {key}.id: expected lowercase letters, digits and '-', got {uid!r}")
            continue
        key = f"unit[{i}] ({uid})"
        if uid in units:
            errors.append(f"{where}: {key}.id: expected a unique id, {uid!r} appears twice")
            continue
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            errors.append(f"{where}: {key}.name: expected a non-empty string")
            name = ""
        name_en = entry.get("name_en", "")
        if not isinstance(name_en, str):
            errors.append(f"{where}: {key}.name_en: expected a string")
            name_en = ""
        kind = entry.get("kind")
        if kind not in KINDS:
            errors.append(f"{where}: {key}.kind: expected one of {', '.join(KINDS)}, got {kind!r}")
        parent = entry.get("parent", "")
        if not isinstance(parent, str):
            errors.append(f"{where}: {key}.parent: expected a unit id or \"\"")
            parent = ""
        emails = entry.get("emails", [])
        if not isinstance(emails, list) or not all(isinstance(m, str) and _EMAIL.match(m) for m in emails):
            errors.append(f"{where}: {key}.emails: expected a list of e-mail addresses, got {emails!r}")
            emails = []
        units[uid] = Unit(uid, parent or None, name, name_en, str(kind), list(emails), i)
        hashes[uid] = hashlib.sha256(json.dumps(entry, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]
    for u in units.values():
        if u.parent_id is not None and u.parent_id not in units:
            errors.append(f"{where}: unit {u.id}.parent: expected the id of a unit in this file, got {u.parent_id!r}")
    ordered = _parents_first(units, where, errors)
    if errors:
        raise UnitsError(errors)
    return ordered, hashes


def _parents_first(units: dict[str, Unit], where: str, errors: list[str]) -> list[Unit]:
    ordered: list[Unit] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(u: Unit, path: list[str]) -> None:
        if state.get(u.id) == 2:
            return
        if state.get(u.id) == 1:
            errors.append(f"{where}: unit {u.id}.parent: expected no cycle, found {' -> '.join(path + [u.id])}")
            return
        state[u.id] = 1
        if u.parent_id in units:
            visit(units[u.parent_id], path + [u.id])
        state[u.id] = 2
        ordered.append(u)

    for u in units.values():
        visit(u, [])
    return ordered


def load_units_file(path: Path) -> tuple[list[Unit], dict[str, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UnitsError([f"{path}: cannot read the units file: {e.strerror or e}"]) from None
    except UnicodeDecodeError:
        raise UnitsError([f"{path}: expected UTF-8 text"]) from None
    return parse_units(text, str(path))


def subtree(units: list[Unit], root_id: str) -> set[str]:
    """Ids of root_id and every unit below it."""
    children: dict[str | None, list[str]] = {}
    for u in units:
        children.setdefault(u.parent_id, []).append(u.id)
    out, todo = set(), [root_id]
    while todo:
        uid = todo.pop()
        if uid not in out:
            out.add(uid)
            todo.extend(children.get(uid, []))
    return out


def tree_rows(units: list[Unit]) -> list[tuple[int, Unit]]:
    """(depth, unit) in display order, for the units tree page and pickers."""
    children: dict[str | None, list[Unit]] = {}
    ids = {u.id for u in units}
    for u in sorted(units, key=lambda u: (u.sort_key, u.id)):
        children.setdefault(u.parent_id if u.parent_id in ids else None, []).append(u)
    rows: list[tuple[int, Unit]] = []

    def walk(parent: str | None, depth: int) -> None:
        for u in children.get(parent, []):
            rows.append((depth, u))
            walk(u.id, depth + 1)

    walk(None, 0)
    return rows


def units_as_json(units: list[Any]) -> list[dict[str, Any]]:
    return [u.as_json() for u in units]
