"""Who is using the dashboard: OIDC through ``st.login`` when configured, else the local users file.

With an ``[auth]`` section in ``.streamlit/secrets.toml`` (e.g. Amazon Cognito) the identity
provider logs people in and the role comes from a claim (``[auth] role_claim``, default
``custom:role``; a list claim such as ``cognito:groups`` works too: the first value that is a
role id wins). Without it, ``qcbr.users.UserStore`` checks names and bcrypt hashes and
rate-limits failures. Either way the session holds only ``{name, role, via}``; the role is
re-read from the users file on every run, so removing a user or changing a role takes effect at
once.
"""
from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard import nav
from qcbr.roles import ROLE_LABELS, ROLES, Actor

SESSION_KEY = "qcbr_user"
DEFAULT_ROLE_CLAIM = "custom:role"


def oidc_settings() -> dict[str, Any] | None:
    """The ``[auth]`` secrets section, or None when the app uses the local users file."""
    try:
        if "auth" not in st.secrets:
            return None
        section = st.secrets["auth"]
    except Exception:  # no secrets.toml at all
        return None
    return dict(section) if section else None


def role_from_claims(claims: dict[str, Any], claim: str) -> str | None:
    """The first role id found in ``claims[claim]`` (a string, a comma list, or a list)."""
    value = claims.get(claim)
    if value is None:
        return None
    if isinstance(value, str):
        values = [v.strip() for v in value.replace(";", ",").split(",")]
    elif isinstance(value, (list, tuple)):
        values = [str(v).strip() for v in value]
    else:
        values = [str(value)]
    return next((v for v in values if v in ROLES), None)


def _local_actor(user: dict) -> Actor | None:
    from qcbr.errors import QCBRError
    from qcbr.users import UserStore

    from dashboard.state import config

    try:
        actor = UserStore(config().home).actor(user["name"])
    except QCBRError:
        return None
    return actor


def current_actor() -> Actor | None:
    """The logged-in user's Actor for this run, or None."""
    settings = oidc_settings()
    if settings is not None:
        if not st.user.is_logged_in:
            st.session_state.pop(SESSION_KEY, None)
            return None
        claims = st.user.to_dict()
        role = role_from_claims(claims, settings.get("role_claim", DEFAULT_ROLE_CLAIM))
        if role is None:
            return None
        name = str(claims.get("email") or claims.get("preferred_username") or claims.get("name") or claims.get("sub"))
        st.session_state[SESSION_KEY] = {"name": name, "role": role, "via": "oidc"}
        return Actor(name, role)
    user = st.session_state.get(SESSION_KEY)
    if not user:
        return None
    actor = _local_actor(user)
    if actor is None:  # removed from the users file since login
        st.session_state.pop(SESSION_KEY, None)
        st.session_state["qcbr_login_notice"] = f"User {user['name']!r} no longer exists; log in again."
        return None
    if actor.role != user.get("role"):
        st.session_state[SESSION_KEY] = {**user, "role": actor.role}
    return actor


def logout() -> None:
    """Forget the session's user (and the OIDC cookie when the provider logged them in)."""
    via = (st.session_state.get(SESSION_KEY) or {}).get("via")
    for key in [k for k in st.session_state.keys() if str(k).startswith("qcbr_")]:
        del st.session_state[key]
    if via == "oidc":
        st.logout()
    st.rerun()


def login_page() -> None:
    """The whole page a logged-out visitor sees."""
    from dashboard.components import logo

    logo()
    st.title("qCBR Studio")
    st.caption("Quantum case-based reasoning, from cases to a monitored endpoint.")
    settings = oidc_settings()
    if settings is not None:
        _oidc_login(settings)
        return
    _local_login()


def _oidc_login(settings: dict[str, Any]) -> None:
    claim = settings.get("role_claim", DEFAULT_ROLE_CLAIM)
    if st.user.is_logged_in:
        st.error(
            f"You are signed in as {st.user.get('email') or st.user.get('name')}, but your account has no "
            f"qCBR role: the identity provider must send the claim {claim!r} with one of "
            f"{', '.join(ROLES)}. Ask your administrator to add it (in Cognito: a custom attribute or a group)."
        )
        if st.button("Log out", key="qcbr_oidc_logout"):
            st.logout()
        return
    provider = settings.get("provider")
    st.write("Sign in with your organisation's account.")
    if st.button("Log in", type="primary", key="qcbr_oidc_login"):
        st.login(provider) if provider else st.login()


def _local_login() -> None:
    from qcbr.errors import AuthError, QCBRError
    from qcbr.users import UserStore

    from dashboard.state import config, initial_accounts

    home = config().home
    created = initial_accounts(str(home))
    notice = st.session_state.pop("qcbr_login_notice", None)
    if notice:
        st.warning(notice)
    if created:
        st.info(
            "First start: one account per role (analyst, scientist, manager) was created; their passwords "
            "were printed once in the terminal that started the dashboard."
        )
    with st.form("login", clear_on_submit=False, border=True):
        name = st.text_input("User name", key="login_name", autocomplete="username")
        password = st.text_input("Password", type="password", key="login_password", autocomplete="current-password")
        submitted = st.form_submit_button("Log in", type="primary")
    st.caption(
        "Accounts live in the users file of this installation; the operator manages them with "
        "`qcbr users add | set-password | remove | list`."
    )
    if not submitted:
        return
    if not name or not password:
        st.error("Enter your user name and password.")
        return
    try:
        actor = UserStore(home).authenticate(name.strip(), password)
    except AuthError as exc:
        st.error(str(exc), icon=":material/lock:")
        return
    except QCBRError as exc:
        st.error(str(exc))
        return
    st.session_state[SESSION_KEY] = {"name": actor.name, "role": actor.role, "via": "local"}
    st.session_state.pop("login_password", None)
    st.rerun()


def guard(page_key: str) -> Actor:
    """The page's first line: the logged-in Actor, or a refusal and ``st.stop()``.

    Navigation registers only the allowed pages, so this refuses only when a page script is run
    some other way; it is a second check, and the library checks mutating calls a third time.
    """
    actor = current_actor()
    if actor is None:
        st.warning("Please log in first.", icon=":material/login:")
        st.stop()
    if not nav.allowed(actor.role, page_key):
        spec = nav.BY_KEY[page_key]
        who = ", ".join(ROLE_LABELS[r].lower() for r in sorted(spec.roles))
        st.error(
            f"{spec.title} is not available to a {ROLE_LABELS[actor.role].lower()} ({actor.name}); "
            f"it is for: {who}.",
            icon=":material/block:",
        )
        st.stop()
    return actor
