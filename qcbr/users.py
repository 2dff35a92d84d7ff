"""Dashboard users: names, roles and salted bcrypt hashes in ``$QCBR_HOME/users.json``.

This is the embedded default login (no identity provider needed). The file is the only state:
failed-login counters and locks live in it too, so a lock survives a dashboard restart. Every
change is made under an exclusive file lock and written atomically, so two dashboard processes
(or the CLI next to a running dashboard) never lose each other's updates.
"""
from __future__ import annotations

import fcntl
import functools
import os
import re
import secrets
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from qcbr.errors import AuthError, ConfigError, NotFoundError, StateError
from qcbr.roles import ROLE_LABELS, ROLES, Actor
from qcbr.storage import atomic_write_json, read_json

USERS_FILE = "users.json"
LOCK_FILE = ".users.lock"
FORMAT_VERSION = 1

MAX_FAILURES = 5  # consecutive failures before an account locks
BASE_LOCK_SECONDS = 30.0  # first lock; doubles with every further failure
MAX_LOCK_SECONDS = 3600.0
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_BYTES = 72  # bcrypt's limit; longer passwords would be silently truncated elsewhere
DEFAULT_ROUNDS = 12

# one account per role on first start (name -> role)
INITIAL_ACCOUNTS = {"analyst": "business", "scientist": "data_scientist", "manager": "manager"}

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


@functools.lru_cache(maxsize=4)
def _dummy_hash(rounds: int) -> bytes:
    """Checked when the user does not exist, so a wrong name costs as long as a wrong password."""
    import bcrypt

    return bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=rounds))


def _now_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def _rounds_from_env() -> int:
    raw = os.environ.get("QCBR_BCRYPT_ROUNDS")
    if not raw:
        return DEFAULT_ROUNDS
    try:
        rounds = int(raw)
    except ValueError:
        raise ConfigError(f"QCBR_BCRYPT_ROUNDS={raw!r} is not an integer; use 4..16 (default 12)") from None
    if not 4 <= rounds <= 16:
        raise ConfigError(f"QCBR_BCRYPT_ROUNDS={rounds} is out of range; use 4..16 (default 12)")
    return rounds


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(
            f"user name {name!r} is not valid; use 1-64 letters, digits, '_', '.', '@' or '-', "
            "starting with a letter or digit"
        )
    return name


def validate_role(role: str) -> str:
    if role not in ROLES:
        raise ConfigError(f"role {role!r} is not a dashboard role; use one of {', '.join(ROLES)}")
    return role


def validate_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise ConfigError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise ConfigError(f"the password must be at most {MAX_PASSWORD_BYTES} bytes (bcrypt's limit)")
    if password.strip() != password:
        raise ConfigError("the password must not start or end with whitespace")
    return password


def lock_seconds(failures: int) -> float:
    """The lock that follows the ``failures``-th consecutive failure (0 below the threshold)."""
    if failures < MAX_FAILURES:
        return 0.0
    return min(BASE_LOCK_SECONDS * 2 ** (failures - MAX_FAILURES), MAX_LOCK_SECONDS)


class UserStore:
    """The users file of one QCBR_HOME."""

    def __init__(self, home: str | os.PathLike, rounds: int | None = None, clock: Callable[[], float] = time.time):
        self.home = Path(home)
        self.path = self.home / USERS_FILE
        self.rounds = rounds if rounds is not None else _rounds_from_env()
        self.clock = clock

    # ------------------------------------------------------------------ file access
    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def exists(self) -> bool:
        return self.path.is_file()

    def _read(self) -> dict:
        if not self.path.is_file():
            return {"version": FORMAT_VERSION, "users": {}}
        try:
            data = read_json(self.path)
        except ValueError as exc:
            raise ConfigError(
                f"users file {self.path} is not valid JSON ({exc}); restore it from a backup or delete it "
                "to create fresh accounts on the next dashboard start"
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("users"), dict):
            raise ConfigError(f"users file {self.path} has no 'users' table; restore it or delete it")
        return data

    def _write(self, data: dict) -> None:
        atomic_write_json(self.path, data)

    def _user(self, data: dict, name: str) -> dict:
        try:
            return data["users"][name]
        except KeyError:
            raise NotFoundError(
                f"no dashboard user {name!r} in {self.path}; list them with `qcbr users list`"
            ) from None

    def _hash(self, password: str) -> str:
        import bcrypt

        return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds=self.rounds)).decode("ascii")

    @staticmethod
    def _public(name: str, rec: dict) -> dict:
        return {
            "name": name,
            "role": rec["role"],
            "role_label": ROLE_LABELS.get(rec["role"], rec["role"]),
            "created": rec.get("created"),
            "password_changed": rec.get("password_changed"),
            "last_login": rec.get("last_login"),
            "failed_logins": int(rec.get("failed_logins", 0)),
            "locked_until": rec.get("locked_until_iso"),
        }

    # ------------------------------------------------------------------ administration
    def add(self, name: str, role: str, password: str) -> dict:
        validate_name(name)
        validate_role(role)
        validate_password(password)
        hashed = self._hash(password)
        now = _now_iso(self.clock())
        with self._locked():
            data = self._read()
            if name in data["users"]:
                raise StateError(
                    f"user {name!r} already exists; change the password with `qcbr users set-password {name}` "
                    f"or remove the user first"
                )
            data["users"][name] = {"role": role, "hash": hashed, "created": now, "password_changed": now,
                                   "failed_logins": 0}
            self._write(data)
            return self._public(name, data["users"][name])

    def remove(self, name: str) -> None:
        with self._locked():
            data = self._read()
            self._user(data, name)
            del data["users"][name]
            self._write(data)

    def set_password(self, name: str, password: str) -> dict:
        """New password; also lifts a lock (the operator's way to unlock an account)."""
        validate_password(password)
        hashed = self._hash(password)
        with self._locked():
            data = self._read()
            rec = self._user(data, name)
            rec.update(hash=hashed, password_changed=_now_iso(self.clock()), failed_logins=0)
            rec.pop("locked_until", None)
            rec.pop("locked_until_iso", None)
            self._write(data)
            return self._public(name, rec)

    def list(self) -> list[dict]:
        data = self._read()
        return [self._public(name, rec) for name, rec in sorted(data["users"].items())]

    def get(self, name: str) -> dict:
        return self._public(name, self._user(self._read(), name))

    def actor(self, name: str) -> Actor:
        rec = self._user(self._read(), name)
        return Actor(name, rec["role"])

    # ------------------------------------------------------------------ login
    def authenticate(self, name: str, password: str) -> Actor:
        """The user's Actor if the password matches; AuthError otherwise (and counts the failure)."""
        import bcrypt

        wrong = (
            f"wrong user name or password; after {MAX_FAILURES} failed attempts in a row an account is "
            "locked for a growing delay"
        )
        candidate = password.encode("utf-8") if isinstance(password, str) else b""
        with self._locked():
            data = self._read()
            rec = data["users"].get(name) if isinstance(name, str) else None
            if rec is None:
                bcrypt.checkpw(b"x", _dummy_hash(self.rounds))  # same cost as a real check
                raise AuthError(wrong)
            now = self.clock()
            locked_until = float(rec.get("locked_until") or 0)
            if locked_until > now:
                raise AuthError(self._locked_message(name, rec, locked_until - now))
            ok = 0 < len(candidate) <= MAX_PASSWORD_BYTES and bcrypt.checkpw(candidate, rec["hash"].encode("ascii"))
            if ok:
                rec["failed_logins"] = 0
                rec.pop("locked_until", None)
                rec.pop("locked_until_iso", None)
                rec["last_login"] = _now_iso(now)
                self._write(data)
                return Actor(name, rec["role"])
            rec["failed_logins"] = int(rec.get("failed_logins", 0)) + 1
            delay = lock_seconds(rec["failed_logins"])
            if delay:
                rec["locked_until"] = now + delay
                rec["locked_until_iso"] = _now_iso(now + delay)
            self._write(data)
            if delay:
                raise AuthError(self._locked_message(name, rec, delay))
            raise AuthError(wrong)

    @staticmethod
    def _locked_message(name: str, rec: dict, remaining: float) -> str:
        return (
            f"account {name!r} is locked after {rec['failed_logins']} failed logins in a row; try again in "
            f"{int(remaining + 0.999)} s, or ask the operator to reset it with `qcbr users set-password {name}`"
        )

    def ensure_initial_accounts(self) -> dict[str, str]:
        """Create one account per role with random passwords when no users file exists.

        Returns ``{name: password}`` exactly once (the call that created them) and ``{}`` after,
        so whoever starts the dashboard first sees the passwords and nobody else ever does.
        """
        with self._locked():
            if self.path.exists():
                return {}
            now = _now_iso(self.clock())
            passwords = {name: secrets.token_urlsafe(12) for name in INITIAL_ACCOUNTS}
            users = {
                name: {"role": role, "hash": self._hash(passwords[name]), "created": now,
                       "password_changed": now, "failed_logins": 0}
                for name, role in INITIAL_ACCOUNTS.items()
            }
            self._write({"version": FORMAT_VERSION, "users": users})
            return passwords
