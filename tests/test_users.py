"""The local users file: hashes, roles, rate-limited logins, initial accounts, the CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from qcbr.errors import AuthError, ConfigError, NotFoundError, StateError
from qcbr.roles import Actor
from qcbr.users import BASE_LOCK_SECONDS, INITIAL_ACCOUNTS, MAX_FAILURES, UserStore, lock_seconds

ROOT = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self, t: float = 1_700_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(tmp_path, clock):
    return UserStore(tmp_path, rounds=4, clock=clock)


def test_add_and_authenticate_returns_actor_and_never_stores_the_password(store, tmp_path):
    store.add("alice", "data_scientist", "correct horse")
    assert store.authenticate("alice", "correct horse") == Actor("alice", "data_scientist")
    raw = (tmp_path / "users.json").read_text()
    assert "correct horse" not in raw
    assert json.loads(raw)["users"]["alice"]["hash"].startswith("$2b$04$")
    assert oct((tmp_path / "users.json").stat().st_mode & 0o777) == "0o600"
    listed = store.list()
    assert [u["name"] for u in listed] == ["alice"] and "hash" not in listed[0]
    assert listed[0]["last_login"] is not None


def test_salts_differ_for_equal_passwords(store, tmp_path):
    store.add("a1", "business", "same password")
    store.add("a2", "business", "same password")
    users = json.loads((tmp_path / "users.json").read_text())["users"]
    assert users["a1"]["hash"] != users["a2"]["hash"]


def test_wrong_password_and_unknown_user_give_the_same_error(store):
    store.add("bob", "business", "bobs password")
    with pytest.raises(AuthError) as wrong:
        store.authenticate("bob", "nope nope")
    with pytest.raises(AuthError) as unknown:
        store.authenticate("nobody", "nope nope")
    assert str(wrong.value) == str(unknown.value)
    assert "wrong user name or password" in str(wrong.value)


def test_lock_after_repeated_failures_grows_and_survives_a_restart(store, clock, tmp_path):
    store.add("carol", "manager", "carols password")
    for _ in range(MAX_FAILURES - 1):
        with pytest.raises(AuthError, match="wrong user name"):
            store.authenticate("carol", "bad password")
    with pytest.raises(AuthError, match=r"locked after 5 failed logins.*try again in 30 s"):
        store.authenticate("carol", "bad password")
    # the right password is refused while locked, even by a fresh store (a restarted dashboard)
    restarted = UserStore(tmp_path, rounds=4, clock=clock)
    with pytest.raises(AuthError, match="locked"):
        restarted.authenticate("carol", "carols password")
    clock.t += BASE_LOCK_SECONDS + 1
    with pytest.raises(AuthError, match=r"try again in 60 s"):  # one more failure doubles the lock
        restarted.authenticate("carol", "still wrong")
    clock.t += 2 * BASE_LOCK_SECONDS + 1
    assert restarted.authenticate("carol", "carols password").role == "manager"
    assert store.get("carol")["failed_logins"] == 0 and store.get("carol")["locked_until"] is None


def test_lock_seconds_is_capped():
    assert lock_seconds(MAX_FAILURES - 1) == 0
    assert lock_seconds(MAX_FAILURES) == BASE_LOCK_SECONDS
    assert lock_seconds(100) == 3600


def test_set_password_replaces_the_old_one_and_lifts_the_lock(store):
    store.add("dave", "business", "first password")
    for _ in range(MAX_FAILURES):
        with pytest.raises(AuthError):
            store.authenticate("dave", "bad password")
    store.set_password("dave", "second password")
    with pytest.raises(AuthError, match="wrong"):
        store.authenticate("dave", "first password")
    assert store.authenticate("dave", "second password").name == "dave"


def test_invalid_input_is_refused_with_what_to_fix(store):
    with pytest.raises(ConfigError, match="not a dashboard role"):
        store.add("eve", "admin", "long enough")
    with pytest.raises(ConfigError, match="at least 8"):
        store.add("eve", "business", "short")
    with pytest.raises(ConfigError, match="72 bytes"):
        store.add("eve", "business", "x" * 73)
    with pytest.raises(ConfigError, match="not valid"):
        store.add("../eve", "business", "long enough")
    store.add("eve", "business", "long enough")
    with pytest.raises(StateError, match="already exists"):
        store.add("eve", "manager", "long enough")
    with pytest.raises(NotFoundError, match="qcbr users list"):
        store.remove("mallory")
    store.remove("eve")
    with pytest.raises(NotFoundError):
        store.actor("eve")


def test_initial_accounts_are_created_once_one_per_role(store, tmp_path):
    passwords = store.ensure_initial_accounts()
    assert set(passwords) == set(INITIAL_ACCOUNTS)
    assert {store.authenticate(n, p).role for n, p in passwords.items()} == {"business", "data_scientist", "manager"}
    assert store.ensure_initial_accounts() == {}
    assert UserStore(tmp_path, rounds=4).ensure_initial_accounts() == {}


def test_no_initial_accounts_when_a_users_file_exists(store):
    store.add("only", "manager", "only password")
    assert store.ensure_initial_accounts() == {}
    assert [u["name"] for u in store.list()] == ["only"]


def test_concurrent_writers_do_not_lose_updates(tmp_path):
    def add(i: int) -> None:
        UserStore(tmp_path, rounds=4).add(f"user{i}", "business", f"password-{i}")

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(UserStore(tmp_path).list()) == 8


def test_corrupt_file_is_a_clear_error(tmp_path):
    (tmp_path / "users.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        UserStore(tmp_path).list()


def _cli(home: Path, *args: str, stdin: str = "", user: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "QCBR_HOME": str(home), "QCBR_BCRYPT_ROUNDS": "4"}
    env.pop("QCBR_USER", None)
    if user:
        env["QCBR_USER"] = user
    return subprocess.run(
        [sys.executable, "-m", "qcbr", "users", *args], input=stdin, capture_output=True, text=True,
        cwd=ROOT, env=env, timeout=60,
    )


def test_cli_add_list_set_password_remove(tmp_path):
    r = _cli(tmp_path, "add", "frank", "--role", "manager", stdin="franks password\n")
    assert r.returncode == 0, r.stderr
    assert "added frank" in r.stdout
    assert "franks password" not in (tmp_path / "users.json").read_text()
    listed = json.loads(_cli(tmp_path, "list", "--json").stdout)
    assert [(u["name"], u["role"]) for u in listed] == [("frank", "manager")]
    assert UserStore(tmp_path).authenticate("frank", "franks password").role == "manager"

    assert _cli(tmp_path, "set-password", "frank", stdin="new password!\n").returncode == 0
    assert UserStore(tmp_path).authenticate("frank", "new password!").name == "frank"

    r = _cli(tmp_path, "add", "frank", "--role", "business", stdin="whatever pw\n")
    assert r.returncode == 1 and "already exists" in r.stderr

    r = _cli(tmp_path, "add", "gina", "--role", "manager", stdin="")
    assert r.returncode == 1 and "no password on stdin" in r.stderr

    assert _cli(tmp_path, "remove", "frank").returncode == 0
    assert "no users yet" in _cli(tmp_path, "list").stdout


def test_cli_refuses_a_dashboard_user_and_bad_roles(tmp_path):
    UserStore(tmp_path, rounds=4).add("hank", "business", "hanks password")
    r = _cli(tmp_path, "add", "ivy", "--role", "manager", stdin="ivys password\n", user="hank")
    assert r.returncode == 1 and "may not manage users" in r.stderr
    r = _cli(tmp_path, "add", "ivy", "--role", "admin", stdin="ivys password\n")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_cli_init_prints_the_passwords_once(tmp_path):
    first = _cli(tmp_path, "init")
    assert first.returncode == 0, first.stderr
    lines = [l.split() for l in first.stdout.splitlines() if " password " in l]
    assert {parts[0] for parts in lines} == set(INITIAL_ACCOUNTS)
    store = UserStore(tmp_path)
    assert all(store.authenticate(parts[0], parts[-1]).name == parts[0] for parts in lines)
    again = _cli(tmp_path, "init")
    assert again.returncode == 0 and "exists already (3 users)" in again.stdout
    assert " password " not in again.stdout
