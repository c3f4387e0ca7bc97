"""``lienthong admin add USER`` and ``lienthong admin token USER``."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING, Any, Callable

from lienthong.store.web import ROLES

if TYPE_CHECKING:
    from lienthong.config import Config


def register(sub: Any, config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    admin = sub.add_parser("admin", help="manage panel accounts")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    p = admin_sub.add_parser("add", help="add an account (password from stdin when not a terminal)")
    p.add_argument("user")
    p.add_argument("--unit", help="unit id (required for unit_admin)")
    p.add_argument("--role", default="system_admin", choices=ROLES, help="default system_admin")
    config_args(p)
    p.set_defaults(handler=admin_add)
    p = admin_sub.add_parser("token", help="print a new API token for USER (for scripts)")
    p.add_argument("user")
    p.add_argument("--label", default="cli")
    config_args(p)
    p.set_defaults(handler=admin_token)


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Repeat: ") != first:
            raise SystemExit("admin add: the passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


async def admin_add(args: argparse.Namespace, config: Config) -> int:
    from lienthong.store import Store
    from web import load_units
    from web.auth import MIN_PASSWORD, hash_password
    from web.panel import _USERNAME

    if not _USERNAME.match(args.user):
        print("admin add: user names use letters, digits, '.', '-', '_' (64 at most)", file=sys.stderr)
        return 1
    if args.role == "unit_admin" and not args.unit:
        print("admin add: --unit is required for --role unit_admin", file=sys.stderr)
        return 1
    password = _read_password()
    if len(password) < MIN_PASSWORD:
        print(f"admin add: the password needs at least {MIN_PASSWORD} characters", file=sys.stderr)
        return 1
    async with Store(config.state_file(config.store.path)) as store:
        await load_units(config, store)
        if args.unit and await store.web.unit(args.unit) is None:
            print(f"admin add: no unit {args.unit!r} (see the units file)", file=sys.stderr)
            return 1
        if await store.web.account_by_name(args.user) is not None:
            print(f"admin add: account {args.user!r} exists", file=sys.stderr)
            return 1
        await store.web.add_account(args.user, hash_password(password), args.role, args.unit)
        await store.web.add_audit("cli", "local", "account.add", f"account:{args.user}",
                                  {"role": args.role, "unit": args.unit})
    print(f"account {args.user} added ({args.role})")
    return 0


async def admin_token(args: argparse.Namespace, config: Config) -> int:
    from lienthong.store import Store
    from web.auth import new_api_token, token_hash

    async with Store(config.state_file(config.store.path)) as store:
        account = await store.web.account_by_name(args.user)
        if account is None:
            print(f"admin token: no account {args.user!r}", file=sys.stderr)
            return 1
        token = new_api_token()
        await store.web.add_api_token(token_hash(token), account.id, args.label)
        await store.web.add_audit("cli", "local", "token.create", f"account:{args.user}", {})
    print(token)
    return 0
