"""Configuration: one validated object, built from TOML and passed down.

Each service owns the dataclass of its own section (``web.config.WebConfig``,
``media.config.MediaConfig``, ``mail.config.MailConfig``); this module owns the general
sections and the validator.  The validator walks the dataclass type hints, so adding a
field to a section is all it takes to add a config key.  Every error names the file, the
dotted key and what was expected; unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mail.config import MailConfig
from media.config import MediaConfig
from web.config import WebConfig


class ConfigError(Exception):
    """All problems found in one configuration, each naming file, key and expectation."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass
class GeneralConfig:
    # Where the database, generated certificate, secrets, mail spool and DKIM keys live.
    state_dir: str = "state"
    # IANA time zone used to enter and show meeting times.
    timezone: str = "Asia/Ho_Chi_Minh"
    # Default interface language: "vi" or "en".
    language: str = "vi"
    # Units hierarchy loaded into the store at start-up (relative to the config file);
    # "" = the demo hierarchy shipped with the package (web/demo/units.toml).
    units_file: str = ""
    # How long shutdown waits for connections to close before cancelling them (seconds).
    shutdown_timeout: float = 10.0

    def validate(self) -> list[tuple[str, str]]:
        problems = []
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            problems.append(("timezone", f"an IANA time zone such as Asia/Ho_Chi_Minh, got {self.timezone!r}"))
        if self.language not in ("vi", "en"):
            problems.append(("language", f'"vi" or "en", got {self.language!r}'))
        if self.shutdown_timeout <= 0:
            problems.append(("shutdown_timeout", "a positive number of seconds"))
        return problems


@dataclass
class TlsConfig:
    # PEM certificate chain and key.  Both empty: a self-signed pair is generated into
    # the state dir at first start (browsers allow camera access only on HTTPS or localhost).
    cert: str = ""
    key: str = ""
    # Host names and IP addresses written into a generated certificate.
    generated_names: list[str] = field(default_factory=lambda: ["localhost", "127.0.0.1"])

    def validate(self) -> list[tuple[str, str]]:
        if bool(self.cert) != bool(self.key):
            return [("cert", "cert and key both set, or both empty for a generated self-signed pair")]
        return []


@dataclass
class StoreConfig:
    # "sqlite" is the only backend for now; PostgreSQL comes when several nodes share one store.
    backend: str = "sqlite"
    # SQLite database file, relative to the state dir unless absolute.
    path: str = "lienthong.db"

    def validate(self) -> list[tuple[str, str]]:
        if self.backend != "sqlite":
            return [("backend", f'"sqlite" (the only backend so far), got {self.backend!r}')]
        return []


@dataclass
class Config:
    general: GeneralConfig = field(default_factory=GeneralConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    web: WebConfig = field(default_factory=WebConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    mail: MailConfig = field(default_factory=MailConfig)
    # The file this came from ("" for built-in defaults); paths in it are relative to it.
    source: str = field(default="", metadata={"internal": True})

    @property
    def state_path(self) -> Path:
        return Path(self.general.state_dir).resolve()

    def resolve_path(self, value: str) -> Path:
        """A path from the config: relative to the config file's folder, else to the cwd."""
        p = Path(value)
        if p.is_absolute():
            return p
        base = Path(self.source).resolve().parent if self.source else Path.cwd()
        return (base / p).resolve()

    def state_file(self, value: str) -> Path:
        """A path relative to the state dir unless absolute."""
        p = Path(value)
        return p if p.is_absolute() else self.state_path / p


_TOP_SECTIONS = {f.name for f in dataclasses.fields(Config) if f.name != "source"}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        (inner,) = typing.get_args(tp)
        return f"a list of {_type_name(inner)}"
    if origin is dict:
        return "a table"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(tp, str(tp))


def _convert(tp: Any, value: Any, key: str, where: str, errors: list[str]) -> Any:
    """Check ``value`` against type ``tp``; build nested dataclasses.  Appends errors."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, key, where, errors)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            errors.append(f"{where}: {key}: expected a table, got {value!r}")
            return typing.cast(Any, tp)()
        return _build(tp, value, key, where, errors)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            errors.append(f"{where}: {key}: expected {_type_name(tp)}, got {value!r}")
            return []
        return [_convert(inner, v, f"{key}[{i}]", where, errors) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            errors.append(f"{where}: {key}: expected a table, got {value!r}")
            return {}
        _, vt = typing.get_args(tp)
        return {k: _convert(vt, v, f"{key}.{k}", where, errors) for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is Any:
        return value
    if isinstance(value, bool) and tp is not bool:
        errors.append(f"{where}: {key}: expected {_type_name(tp)}, got {value!r}")
        return None
    if not isinstance(value, tp):
        errors.append(f"{where}: {key}: expected {_type_name(tp)}, got {value!r}")
        return None
    return value


def _build(cls: Any, data: dict[str, Any], prefix: str, where: str, errors: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init and not f.metadata.get("internal")}
    type_errors = 0
    kwargs: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else k
        if k not in known:
            errors.append(f"{where}: {key}: unknown key (known: {', '.join(sorted(known))})")
            continue
        before = len(errors)
        converted = _convert(hints[k], v, key, where, errors)
        if len(errors) == before:
            kwargs[k] = converted
        else:
            type_errors += 1
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None and type_errors == 0:
        for sub, expectation in validate():
            errors.append(f"{where}: {prefix}.{sub}: expected {expectation}")
    return obj


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate ``path`` (None: built-in defaults).  Raises ConfigError."""
    if path is None:
        cfg = Config()
        errors: list[str] = []
        for name in _TOP_SECTIONS:
            v = getattr(getattr(cfg, name), "validate", None)
            for sub, expectation in (v() if v else []):
                errors.append(f"<defaults>: {name}.{sub}: expected {expectation}")
        if errors:
            raise ConfigError(errors)
        return cfg
    where = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError([f"{where}: cannot read: {e.strerror or e}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError([f"{where}: expected UTF-8 text"]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{where}: not valid TOML: {e}"]) from None
    errors = []
    cfg = typing.cast(Config, _build(Config, data, "", where, errors))
    if errors:
        raise ConfigError(errors)
    cfg.source = str(Path(path).resolve())
    return cfg
