"""The dashboard shell under AppTest: login (local and OIDC), role -> pages, guards, logout."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import nav
from dashboard.auth import role_from_claims
from dashboard.testing import APP, REPO_ROOT, app_as, ensure_user, open_page, page_path, texts
from qcbr.users import UserStore

ROLES = ("business", "data_scientist", "manager")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("QCBR_HOME", str(tmp_path))
    monkeypatch.setenv("QCBR_BCRYPT_ROUNDS", "4")
    monkeypatch.delenv("QCBR_BACKEND", raising=False)
    monkeypatch.delenv("QCBR_CONFIG", raising=False)
    return tmp_path


def login(at: AppTest, name: str, password: str) -> AppTest:
    at.text_input(key="login_name").set_value(name)
    at.text_input(key="login_password").set_value(password)
    return at.button[0].click().run()


def test_first_start_creates_accounts_prints_them_once_and_they_log_in(home, capsys):
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception
    printed = capsys.readouterr().out
    assert "first start" in printed.lower()
    passwords = {}
    for line in printed.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[1] == "role" and parts[3] == "password":
            passwords[parts[0]] = parts[4]
    assert set(passwords) == {"analyst", "scientist", "manager"}
    assert "passwords were printed once in the terminal" in texts(at)
    # the second start prints nothing
    AppTest.from_file(str(APP), default_timeout=60).run()
    assert "password" not in capsys.readouterr().out

    at = login(at, "scientist", passwords["scientist"])
    assert not at.exception
    assert at.session_state["qcbr_user"] == {"name": "scientist", "role": "data_scientist", "via": "local"}
    assert "scientist" in texts(at) and "Data scientist" in texts(at)
    assert "Backend: **local**" in texts(at)


def test_wrong_password_is_refused_and_repeated_failures_lock_the_account(home):
    ensure_user(home, "manager", "boss")
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    for _ in range(4):
        at = login(at, "boss", "not the password")
        assert "wrong user name or password" in texts(at)
        assert "qcbr_user" not in at.session_state
    at = login(at, "boss", "not the password")
    assert "locked after 5 failed logins" in texts(at)
    at = login(at, "boss", "boss-password")  # the right password is refused while locked
    assert "locked" in texts(at) and "qcbr_user" not in at.session_state
    assert UserStore(home).get("boss")["locked_until"] is not None


def test_empty_form_asks_for_both_fields(home):
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    at = at.button[0].click().run()
    assert "Enter your user name and password" in texts(at)


@pytest.mark.parametrize("role", ROLES)
def test_navigation_registers_only_the_roles_pages(home, role):
    at = app_as(role, home).run()
    assert not at.exception
    allowed = {p.key for p in nav.pages_for(role)}
    for spec in nav.PAGES:
        if spec.key in allowed:
            at.switch_page(page_path(spec.key))
        else:
            with pytest.raises(ValueError, match="Could not find a navigation page"):
                at.switch_page(page_path(spec.key))
    # the landing page is the role's home
    home_title = nav.BY_KEY[nav.HOME[role]].title.split(" &")[0]
    assert any(home_title.split()[0] in t.value for t in at.title)


def test_role_map_matches_the_design():
    assert [p.key for p in nav.pages_for("business")] == ["predict", "my_predictions"]
    assert {p.key for p in nav.pages_for("manager")} == {"overview", "registry", "endpoints", "monitoring", "predict"}
    assert {p.key for p in nav.pages_for("data_scientist")} == {p.key for p in nav.PAGES}
    assert all(spec.path.is_file() for spec in nav.PAGES)


@pytest.mark.parametrize("key", ["cases", "training", "circuits", "registry", "overview"])
def test_a_page_run_directly_refuses_a_business_user(home, key):
    name = ensure_user(home, "business")
    at = AppTest.from_file(str(REPO_ROOT / "pages" / f"{key}.py"), default_timeout=60)
    at.session_state["qcbr_user"] = {"name": name, "role": "business", "via": "local"}
    at.run()
    assert not at.exception
    assert f"{nav.BY_KEY[key].title} is not available to a business user" in texts(at)
    assert not at.title  # nothing of the page itself was drawn


def test_a_page_run_directly_without_login_asks_to_log_in(home):
    at = AppTest.from_file(str(REPO_ROOT / "pages" / "predict.py"), default_timeout=60).run()
    assert "Please log in first" in texts(at)
    assert not at.title


def test_a_forged_session_for_an_unknown_user_is_dropped(home):
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.session_state["qcbr_user"] = {"name": "ghost", "role": "manager", "via": "local"}
    at.run()
    assert "qcbr_user" not in at.session_state
    assert "no longer exists" in texts(at)
    assert [t.label for t in at.text_input] == ["User name", "Password"]


def test_a_role_change_in_the_users_file_takes_effect_on_the_next_run(home):
    at = app_as("manager", home, name="pat").run()
    open_page(at, "registry")
    store = UserStore(home, rounds=4)
    store.remove("pat")
    store.add("pat", "business", "pats-password")
    at.run()
    assert at.session_state["qcbr_user"]["role"] == "business"
    # the registry is no longer registered: navigation falls back to the business user's home
    assert [t.value for t in at.title] == ["Predict"]
    assert "Business user" in texts(at)


def test_logout_forgets_the_user(home):
    at = app_as("business", home).run()
    at.button(key="logout").click().run()
    assert "qcbr_user" not in at.session_state
    assert [t.label for t in at.text_input] == ["User name", "Password"]


# ------------------------------------------------------------------------------------------ OIDC
OIDC = {"auth": {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x" * 32,
                 "client_id": "c", "client_secret": "s",
                 "server_metadata_url": "https://example.invalid/.well-known/openid-configuration",
                 "role_claim": "cognito:groups"}}


def test_oidc_logged_out_shows_the_provider_button_not_the_form(home):
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.secrets.update(OIDC)
    at.user = {"is_logged_in": False}
    at.run()
    assert not at.exception
    assert not at.text_input  # no local password form when an identity provider is configured
    assert [b.label for b in at.button] == ["Log in"]


def test_oidc_user_gets_the_role_from_the_claim(home):
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.secrets.update(OIDC)
    at.user = {"is_logged_in": True, "email": "mia@example.com", "cognito:groups": ["staff", "manager"]}
    at.run()
    assert not at.exception
    assert at.session_state["qcbr_user"] == {"name": "mia@example.com", "role": "manager", "via": "oidc"}
    with pytest.raises(ValueError):
        at.switch_page(page_path("cases"))
    open_page(at, "registry")
    assert any("registry" in t.value.lower() for t in at.title)


def test_oidc_user_without_a_role_claim_is_told_what_to_ask_for(home):
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.secrets.update(OIDC)
    at.user = {"is_logged_in": True, "email": "lee@example.com", "cognito:groups": ["staff"]}
    at.run()
    assert "qcbr_user" not in at.session_state
    assert "has no qCBR role" in texts(at) and "cognito:groups" in texts(at)


def test_role_from_claims_accepts_strings_lists_and_comma_lists():
    assert role_from_claims({"custom:role": "manager"}, "custom:role") == "manager"
    assert role_from_claims({"g": ["x", "data_scientist"]}, "g") == "data_scientist"
    assert role_from_claims({"g": "x, business"}, "g") == "business"
    assert role_from_claims({"g": "admin"}, "g") is None
    assert role_from_claims({}, "g") is None
