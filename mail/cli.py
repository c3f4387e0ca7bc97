"""``lienthong mail ...``: agencies, accounts, DKIM keys and the queue.

Queue commands work on the spool directly with the same atomic renames as the server, so they
are safe while it runs: hold/release/flush rewrite the envelope (the server rereads it before
every attempt; flush makes a message due now, picked up at the next scan), delete removes it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import sqlite3
import sys
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from lienthong.config import Config


def register(sub: Any, config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    mail = sub.add_parser("mail", help="the shared mail relay: agencies, accounts, DKIM, queue")
    msub = mail.add_subparsers(dest="mail_command", required=True, metavar="ACTION")

    agency = msub.add_parser("agency", help="agencies and their hosted domains")
    asub = agency.add_subparsers(dest="agency_command", required=True, metavar="ACTION")
    p = asub.add_parser("add", help="add an agency with its domains")
    p.add_argument("name")
    p.add_argument("--domain", action="append", required=True, help="a hosted domain (repeat for more)")
    p.add_argument("--next-hop", default="", help='where inbound mail goes: "host:port" or "mx:NAME"')
    config_args(p)
    p.set_defaults(handler=agency_add)
    p = asub.add_parser("list", help="list agencies and domains")
    config_args(p)
    p.set_defaults(handler=agency_list)

    account = msub.add_parser("account", help="relay accounts")
    acsub = account.add_subparsers(dest="account_command", required=True, metavar="ACTION")
    p = acsub.add_parser("add", help="add an account (password from stdin when not a terminal)")
    p.add_argument("agency")
    p.add_argument("user")
    config_args(p)
    p.set_defaults(handler=account_add)

    p = msub.add_parser("dkim-key", help="create a DKIM key for DOMAIN and print its DNS TXT record")
    p.add_argument("domain")
    config_args(p)
    p.set_defaults(handler=dkim_key)

    queue = msub.add_parser("queue", help="list the queue, or act on it")
    qsub = queue.add_subparsers(dest="queue_command", metavar="ACTION")
    config_args(queue)
    queue.set_defaults(handler=queue_list)
    for name, helptext in (("show", "show one message"), ("hold", "keep a message from delivery"),
                           ("release", "let a held message go"), ("delete", "delete a message (no bounce)"),
                           ("flush", "try now (one message, or all)")):
        p = qsub.add_parser(name, help=helptext)
        p.add_argument("id", nargs="?" if name == "flush" else None)
        config_args(p)
        p.set_defaults(handler=queue_action, action=name)

    from mail.queue_cli import register as register_delivery_commands

    register_delivery_commands(msub, config_args)


async def agency_add(args: argparse.Namespace, config: Config) -> int:
    from lienthong.store import Store

    async with Store(config.state_file(config.store.path)) as store:
        try:
            await store.mail.add_agency(args.name)
            for d in args.domain:
                await store.mail.add_domain(args.name, d, args.next_hop)
        except sqlite3.IntegrityError:
            print(f"mail agency add: agency {args.name!r} or one of its domains exists", file=sys.stderr)
            return 1
    print(f"agency {args.name} added with {', '.join(args.domain)}")
    return 0


async def agency_list(args: argparse.Namespace, config: Config) -> int:
    from lienthong.store import Store

    async with Store(config.state_file(config.store.path)) as store:
        for d in await store.mail.domains():
            print(f"{d.agency}\t{d.domain}\t{d.next_hop or '-'}")
    return 0


async def account_add(args: argparse.Namespace, config: Config) -> int:
    from lienthong.store import Store
    from mail.directory import hash_password

    password = getpass.getpass("Password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\r\n")
    if len(password) < 10:
        print("mail account add: the password needs at least 10 characters", file=sys.stderr)
        return 1
    async with Store(config.state_file(config.store.path)) as store:
        if args.agency not in await store.mail.agencies():
            print(f"mail account add: no agency {args.agency!r}", file=sys.stderr)
            return 1
        try:
            await store.mail.add_account(args.agency, args.user, hash_password(password))
        except sqlite3.IntegrityError:
            print(f"mail account add: account {args.user!r} exists", file=sys.stderr)
            return 1
    print(f"account {args.user} added to {args.agency}")
    return 0


async def dkim_key(args: argparse.Namespace, config: Config) -> int:
    from mail.dkim_sign import create_key

    print(create_key(config.state_path / "dkim", args.domain.lower().rstrip("."), config.mail.dkim_selector))
    return 0


def _spool(config: Config) -> Any:
    from mail.spool import Spool

    spool = Spool(config.state_file(config.mail.spool_dir))
    spool.tmp.mkdir(parents=True, exist_ok=True)
    spool.queue.mkdir(parents=True, exist_ok=True)
    return spool


def _when(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if t else "now"


async def queue_list(args: argparse.Namespace, config: Config) -> int:
    spool = _spool(config)
    rows = list(spool.envelopes())
    print(f"{'ID':<22} {'SENDER':<30} {'RCPTS':>5} {'TRIES':>5} {'NEXT TRY':<20} STATE / LAST ERROR")
    for e in rows:
        state = "held" if e.hold else ("bounce" if e.is_bounce else "queued")
        print(f"{e.id:<22} {(e.mail_from or '<>'):<30} {len(e.pending):>5} {e.attempts:>5} {_when(e.next_try):<20} "
              f"{state} {e.last_error}")
    print(f"{len(rows)} message(s)")
    return 0


async def queue_action(args: argparse.Namespace, config: Config) -> int:
    spool = _spool(config)
    ids = [args.id] if args.id else (spool.ids() if args.action == "flush" else [])
    for queue_id in ids:
        try:
            env = spool.load(queue_id)
        except FileNotFoundError:
            print(f"mail queue {args.action}: no message {queue_id}", file=sys.stderr)
            return 1
        if args.action == "show":
            print(f"id: {env.id}\nfrom: {env.mail_from or '<>'}\nreceived: {_when(env.received_at)}\n"
                  f"agency: {env.agency or '-'} account: {env.account or '-'} client: {env.client}\n"
                  f"attempts: {env.attempts} next try: {_when(env.next_try)} held: {env.hold}")
            for r in env.recipients:
                print(f"  {r.address}: {r.status} {r.last_error}")
            print()
            sys.stdout.write(spool.content(queue_id).decode("utf-8", "replace"))
            continue
        if args.action == "delete":
            await spool.remove(queue_id)
        else:
            if args.action == "hold":
                env.hold = True
            elif args.action == "release":
                env.hold = False
            elif args.action == "flush":
                env.next_try = 0.0
            await spool.save(env)
        print(f"{queue_id}: {args.action} done")
    return 0


