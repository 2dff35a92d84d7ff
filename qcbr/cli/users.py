"""``qcbr users``: manage the dashboard's local accounts (the operator's job).

Passwords are read from stdin, never from the command line (it would land in the shell history
and in ``ps``): without echo when stdin is a terminal, a plain line when it is piped.
"""
from __future__ import annotations

import argparse
import sys

from qcbr.roles import ROLES


def _store():
    from qcbr.config import load_config
    from qcbr.users import UserStore

    return UserStore(load_config().home)


def _require_operator() -> None:
    from qcbr.cli import current_actor
    from qcbr.roles import require

    require(current_actor(), "manage_users")


def read_password(prompt: str = "Password: ", confirm: bool = True) -> str:
    """A password from the terminal (twice, no echo) or one line of piped stdin."""
    from qcbr.errors import ConfigError

    if sys.stdin.isatty():
        import getpass

        first = getpass.getpass(prompt)
        if confirm and getpass.getpass("Repeat: ") != first:
            raise ConfigError("the two passwords differ; run the command again")
        return first
    line = sys.stdin.readline()
    if not line:
        raise ConfigError("no password on stdin; pipe one line, e.g. `printf '%s\\n' \"$PW\" | qcbr users ...`")
    return line.rstrip("\r\n")


def _add(args: argparse.Namespace) -> int:
    _require_operator()
    from qcbr.users import validate_name, validate_role

    validate_name(args.name)
    validate_role(args.role)  # fail before asking for a password
    user = _store().add(args.name, args.role, read_password(f"Password for {args.name}: "))
    print(f"added {user['name']} ({user['role_label'].lower()})")
    return 0


def _remove(args: argparse.Namespace) -> int:
    _require_operator()
    _store().remove(args.name)
    print(f"removed {args.name}")
    return 0


def _set_password(args: argparse.Namespace) -> int:
    _require_operator()
    store = _store()
    store.get(args.name)  # fail before asking for a password
    store.set_password(args.name, read_password(f"New password for {args.name}: "))
    print(f"password changed for {args.name}; any lock is lifted")
    return 0


def _init(args: argparse.Namespace) -> int:
    """What the dashboard's first start does, for scripts that want the passwords up front."""
    _require_operator()
    from qcbr.users import INITIAL_ACCOUNTS

    store = _store()
    passwords = store.ensure_initial_accounts()
    if not passwords:
        print(f"{store.path} exists already ({len(store.list())} users); no passwords to show. "
              "Use `qcbr users set-password NAME` to reset one.")
        return 0
    print("Dashboard accounts created (their passwords are shown only this once):")
    for name, password in passwords.items():
        print(f"    {name:<10} role {INITIAL_ACCOUNTS[name]:<15} password {password}")
    return 0


def _list(args: argparse.Namespace) -> int:
    users = _store().list()
    if args.json:
        from qcbr.cli import print_json

        print_json(users)
        return 0
    if not users:
        print("no users yet; the dashboard creates one per role on its first start, or use `qcbr users add`")
        return 0
    print(f"{'NAME':<20} {'ROLE':<16} {'LAST LOGIN':<26} LOCKED UNTIL")
    for u in users:
        print(f"{u['name']:<20} {u['role']:<16} {u['last_login'] or '-':<26} {u['locked_until'] or '-'}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("users", help="dashboard accounts (local login)")
    sub = parser.add_subparsers(dest="users_command", metavar="ACTION", required=True)

    add = sub.add_parser("add", help="add a user; the password is read from stdin")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES)
    add.set_defaults(func=_add)

    rm = sub.add_parser("remove", help="remove a user")
    rm.add_argument("name")
    rm.set_defaults(func=_remove)

    pw = sub.add_parser("set-password", help="change a password (also unlocks); read from stdin")
    pw.add_argument("name")
    pw.set_defaults(func=_set_password)

    init = sub.add_parser("init", help="create one account per role with random passwords (first start only)")
    init.set_defaults(func=_init)

    ls = sub.add_parser("list", help="list users and roles (never hashes)")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=_list)
