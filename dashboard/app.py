"""qCBR Studio's entrypoint: ``streamlit run dashboard/app.py`` from the repository root.

Runs on every rerun: page config, login, then ``st.navigation`` with only the pages of the
user's role, and the sidebar (user, role, backend, project, logout).
"""
from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))  # `import qcbr` / `dashboard` work however streamlit was started
# streamlit puts this folder first on sys.path; our module names (state, auth) must not shadow others
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p != _HERE]

import streamlit as st  # noqa: E402

from dashboard import auth, nav  # noqa: E402
from dashboard.components import LOGO  # noqa: E402
from qcbr.roles import ROLE_LABELS  # noqa: E402

st.set_page_config(
    page_title="qCBR Studio",
    page_icon=str(LOGO) if LOGO.is_file() else ":material/hub:",
    layout="wide",
    initial_sidebar_state="expanded",
)


def _sidebar(actor) -> None:
    from dashboard.state import config

    with st.sidebar:
        if LOGO.is_file():
            st.logo(str(LOGO))
        try:
            cfg = config()
            backend, project = cfg.backend, cfg.project
        except Exception as exc:  # noqa: BLE001 - a bad config is shown by the pages too
            backend, project = f"invalid config ({exc})", "?"
        st.markdown(f"**{actor.name}**  \n{ROLE_LABELS.get(actor.role, actor.role)}")
        st.caption(f"Backend: **{backend}** · Project: **{project}**")
        if st.button("Log out", key="logout", icon=":material/logout:"):
            auth.logout()


from dashboard.state import start_qiskit_import  # noqa: E402

start_qiskit_import()  # in a thread that outlives every rerun (see dashboard.state._QiskitKeeper)
actor = auth.current_actor()
if actor is None:
    page = st.navigation([st.Page(auth.login_page, title="Log in", url_path="login", icon=":material/login:")],
                         position="hidden")
else:
    sections: dict[str, list] = {}
    home = nav.HOME.get(actor.role)
    for spec in nav.pages_for(actor.role):
        sections.setdefault(spec.section, []).append(
            st.Page(spec.path, title=spec.title, icon=spec.icon, url_path=spec.key, default=spec.key == home)
        )
    page = st.navigation(sections, position="sidebar")
    _sidebar(actor)
page.run()
