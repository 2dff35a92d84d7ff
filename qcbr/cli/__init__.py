"""The ``qcbr`` command.

Each command group lives in its own module under ``qcbr.cli`` and exposes
``register(subparsers)``, adding its sub-commands with ``set_defaults(func=...)``; a ``func``
takes the parsed args and returns an exit code. Errors a user can cause are one line on stderr:
exit 1 for a failure, 2 for bad usage (argparse's own convention).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from qcbr.errors import QCBRError

# command-group modules, in help order; each has register(subparsers)
GROUPS = (
    "qcbr.cli.cases",
    "qcbr.cli.lifecycle",
    "qcbr.cli.users",
    "qcbr.cli.monitor",
    "qcbr.cli.aws",
)


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def current_actor():
    """The CLI acts as the machine's operator unless QCBR_USER names a dashboard user."""
    from qcbr.config import load_config
    from qcbr.roles import OPERATOR

    config = load_config()
    if not config.user:
        return OPERATOR
    from qcbr.users import UserStore

    return UserStore(config.home).actor(config.user)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qcbr", description="qCBR Studio: quantum case-based reasoning, from cases to a monitored endpoint."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in GROUPS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue  # group not built yet
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try: a closed pipe shows up here, not at interpreter exit
        return code
    except BrokenPipeError:
        # the reader went away (`qcbr ... | head`): stop quietly, as Unix tools do on SIGPIPE
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # stdout is no real file (tests): nothing to silence
            pass
        return 141
    except QCBRError as exc:
        print(f"qcbr: error: {exc}", file=sys.stderr)
        return 1
    except PermissionError as exc:
        print(f"qcbr: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("qcbr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
