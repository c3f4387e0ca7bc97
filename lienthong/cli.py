"""``lienthong`` command line.  Flags are process-level only; everything else is config."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import mail
import web
from lienthong.config import Config, ConfigError, load_config
from lienthong.logs import setup_logging

Handler = Callable[[argparse.Namespace, Config], Coroutine[Any, Any, int]]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lienthong",
        description="Liên thông: multi-site video meetings, a shared mail relay and a scheduling panel.",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the meeting server, mail relay and panel in one process")
    _config_args(p)
    p.set_defaults(handler=_serve)

    p = sub.add_parser("check-config", help="validate a configuration and exit 0, or print every error and exit 1")
    _config_args(p, state_dir=False)
    p.set_defaults(handler=_check_config)

    web.register_cli(sub, _config_args)
    mail.register_cli(sub, _config_args)
    return parser


def _config_args(p: argparse.ArgumentParser, state_dir: bool = True) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML configuration (default: built-in defaults)")
    if state_dir:
        p.add_argument("--state-dir", metavar="DIR", help="override general.state_dir")


def _load(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    if getattr(args, "state_dir", None):
        config.general.state_dir = args.state_dir
    return config


async def _serve(args: argparse.Namespace, config: Config) -> int:
    from lienthong.app import serve

    return await serve(config)


async def _check_config(args: argparse.Namespace, config: Config) -> int:
    errors = web.check_config(config)
    if errors:
        for e in errors:
            print(e, file=sys.stderr)
        return 1
    print(f"{args.config or '<built-in defaults>'}: OK")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        config = _load(args)
    except ConfigError as e:
        for line in e.errors:
            print(line, file=sys.stderr)
        return 1
    handler: Handler = args.handler
    try:
        return asyncio.run(handler(args, config))
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a last resort: one readable line, the traceback only at DEBUG
        logging.getLogger("lienthong").debug("command failed", exc_info=True)
        print(f"lienthong {args.command}: error: {e}", file=sys.stderr)
        return 1
