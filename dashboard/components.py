"""Shared page pieces: error display, empty states, status badges, paginated tables."""
from __future__ import annotations

import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import pandas as pd
import streamlit as st

LOGO = Path(__file__).resolve().parents[1] / "assets" / "logo.svg"

STATUS_COLORS = {
    # training
    "InProgress": "blue", "Completed": "green", "Failed": "red", "Stopping": "orange", "Stopped": "gray",
    # registry
    "PendingManualApproval": "orange", "Approved": "green", "Rejected": "red",
    # endpoints
    "Creating": "blue", "InService": "green", "Updating": "blue", "Deleting": "gray",
    # demo / tasks
    "running": "blue", "completed": "green", "failed": "red", "idle": "gray",
}


def logo() -> None:
    if LOGO.is_file():
        st.image(str(LOGO), width=64)


def badge(status: str | None) -> str:
    """Markdown for a coloured status badge."""
    if not status:
        return ":gray-badge[unknown]"
    return f":{STATUS_COLORS.get(status, 'gray')}-badge[{status}]"


def show_error(exc: BaseException, doing: str | None = None) -> None:
    """A user-facing message for an exception: qcbr errors as they are, others briefly."""
    from qcbr.errors import AuthError, CaseValidationError, QCBRError, RoleError

    prefix = f"Could not {doing}: " if doing else ""
    if isinstance(exc, RoleError):
        st.error(f"Not allowed. {exc}", icon=":material/block:")
    elif isinstance(exc, AuthError):
        st.error(str(exc), icon=":material/lock:")
    elif isinstance(exc, CaseValidationError):
        st.error(f"{prefix}the cases need fixing.\n\n{exc}", icon=":material/rule:")
    elif isinstance(exc, QCBRError):
        st.error(f"{prefix}{exc}", icon=":material/error:")
    else:
        print(f"qcbr dashboard: unexpected error while trying to {doing or 'render'}:\n"
              f"{''.join(traceback.format_exception(exc))}", file=sys.stderr)
        st.error(
            f"{prefix}an unexpected {type(exc).__name__} occurred: {exc}. The full traceback is in the "
            "dashboard's terminal.",
            icon=":material/bug_report:",
        )


@contextmanager
def attempt(doing: str) -> Iterator[None]:
    """Run a block, showing any error in place instead of crashing the page.

    Streamlit's own control flow (st.stop, st.rerun) passes through: it derives from BaseException.
    """
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - shown to the user, logged to the terminal
        show_error(exc, doing)


def empty_state(title: str, body: str, icon: str = ":material/info:") -> None:
    """A bordered note that explains why there is nothing here and what to do next."""
    with st.container(border=True):
        st.markdown(f"#### {title}")
        st.markdown(body)


def backend_or_stop():
    """The cached backend, or an explanation and ``st.stop()``."""
    from dashboard.state import BackendUnavailable, backend

    try:
        return backend()
    except BackendUnavailable as exc:
        empty_state("The lifecycle backend is not available", str(exc))
        st.stop()


def fetch(method: str, default: Any = None, doing: str | None = None, **kwargs: Any) -> Any:
    """A cached backend listing; on error shows it and returns ``default``."""
    from dashboard.state import BackendUnavailable, listing

    try:
        return listing(method, **kwargs)
    except BackendUnavailable as exc:
        empty_state("The lifecycle backend is not available", str(exc))
        st.stop()
    except Exception as exc:  # noqa: BLE001
        show_error(exc, doing or method.replace("_", " "))
        return default


def paged_table(
    frame: pd.DataFrame, key: str, page_size: int = 50, column_config: dict | None = None,
    height: int | None = None, sortable: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Show one page of a (possibly huge) frame; the browser never receives all rows.

    Sorting happens on the server over the whole frame (a column and a direction), then one page
    is sliced out. Returns the page shown.
    """
    n = len(frame)
    if n == 0:
        st.caption("No rows.")
        return frame
    cols = st.columns([2, 1, 1, 2])
    sort_options = ["(original order)"] + list(sortable if sortable is not None else frame.columns)
    by = cols[0].selectbox("Sort by", sort_options, key=f"{key}_sort")
    desc = cols[1].toggle("Descending", key=f"{key}_desc")
    pages = max(1, -(-n // page_size))
    page = cols[2].number_input("Page", min_value=1, max_value=pages, value=1, step=1, key=f"{key}_page")
    cols[3].caption(f"{n:,} {'row' if n == 1 else 'rows'} · {pages:,} {'page' if pages == 1 else 'pages'} of {page_size}")
    if by != "(original order)":
        order = frame[by].sort_values(ascending=not desc, kind="stable", na_position="last").index
        start = (int(page) - 1) * page_size
        shown = frame.loc[order[start:start + page_size]]
    else:
        start = (int(page) - 1) * page_size
        shown = frame.iloc[start:start + page_size]
    st.dataframe(shown, hide_index=True, column_config=column_config, height=height or "auto", key=f"{key}_table")
    return shown


def records_frame(records: Sequence[dict], columns: Sequence[str]) -> pd.DataFrame:
    """A frame of chosen keys of backend records (missing keys become empty cells)."""
    return pd.DataFrame([{c: r.get(c) for c in columns} for r in records], columns=list(columns))


def metric_row(items: Sequence[tuple[str, Any]]) -> None:
    cols = st.columns(len(items))
    for col, (label, value) in zip(cols, items):
        col.metric(label, "—" if value is None else value)


def name_follows_stage(key: str, project: str, stage: str) -> None:
    """Before an endpoint-name input (created without ``value=``): suggest ``<project>-<stage>``,
    and when the stage changes replace the previous stage's suggestion (a name the user submitted
    stays). Set through session state: the browser shows a value only when the server pushes it
    that way; a reset keyed input would keep showing, and sending back, the old text."""
    seen_key = f"qcbr_{key}_stage"
    previous = st.session_state.get(seen_key)
    if key not in st.session_state or (previous != stage and st.session_state[key] == f"{project}-{previous}"):
        st.session_state[key] = f"{project}-{stage}"
    st.session_state[seen_key] = stage


def demo_panel(actor, key: str = "demo") -> None:
    """The one-click demo for data scientists: runs ``python -m qcbr demo`` in the background."""
    from dashboard.state import config, demo_seeder

    if not actor.can("seed_demo"):
        return
    seeder = demo_seeder(str(config().home))
    running_key = f"qcbr_{key}_was_running"

    def start() -> None:
        with attempt("start the demo seeding"):
            # a local user runs the CLI as themself, so the library checks their role again
            via = (st.session_state.get("qcbr_user") or {}).get("via")
            seeder.start(actor, env={"QCBR_USER": actor.name} if via == "local" else None)
            st.session_state[running_key] = True
            st.rerun()

    @st.fragment(run_every=2.0 if seeder.status() == "running" else None)
    def panel() -> None:
        status = seeder.status()
        with st.container(border=True):
            st.markdown(f"**Demo data** {badge(status)}")
            if status == "idle":
                st.caption("Seeds a clearly labelled demo: the iris case base, a trained and approved model and a "
                           "staging endpoint. It runs in the background; you can keep working.")
                if st.button("Seed the demo", key=f"{key}_seed", icon=":material/rocket_launch:"):
                    start()
            elif status == "running":
                st.caption(f"Seeding… started {int(time.time() - (seeder.started or time.time()))} s ago.")
                st.code(seeder.log_tail(12) or "(no output yet)", language=None)
            else:
                if status == "completed":
                    st.success("The demo is ready: open Training, Registry or Predict.")
                else:
                    st.error("Seeding the demo failed; the end of its log says why:")
                st.code(seeder.log_tail(20) or "(no output)", language=None)
                if st.button("Run it again", key=f"{key}_again"):
                    start()
            if status != "running" and st.session_state.pop(running_key, False):
                from dashboard.state import clear_listings

                clear_listings()
                st.rerun(scope="app")  # the whole page shows the new state

    panel()


def prediction_rows(records: Sequence[dict], ground_truth: Sequence[dict] | None = None) -> pd.DataFrame:
    """One row per stored prediction record (its first prediction), joined with ground truth."""
    truth: dict[str, Any] = {}
    for g in ground_truth or []:
        event = (g.get("eventMetadata") or {}).get("eventId")
        if event:
            truth[str(event)] = (g.get("groundTruthData") or {}).get("data")
    rows = []
    for r in records:
        preds = (r.get("response") or {}).get("predictions") or [{}]
        first = preds[0] if isinstance(preds[0], dict) else {}
        iid = str(r.get("inference_id") or first.get("inference_id") or "")
        rows.append({
            "inference_id": iid, "time": r.get("time"), "endpoint": r.get("endpoint"),
            "model_version": r.get("model_version"), "user": r.get("user"), "label": first.get("label"),
            "confidence": first.get("confidence"), "flagged": bool(first.get("flagged")),
            "rows": len(preds), "true_label": truth.get(iid),
        })
    frame = pd.DataFrame(rows, columns=["inference_id", "time", "endpoint", "model_version", "user", "label",
                                        "confidence", "flagged", "rows", "true_label"])
    if len(frame):
        frame["correct"] = frame.apply(
            lambda r: None if pd.isna(r["true_label"]) else str(r["true_label"]) == str(r["label"]), axis=1)
    else:
        frame["correct"] = pd.Series(dtype=object)
    return frame


@st.cache_resource(show_spinner=False, max_entries=256)
def figure(builder: str, *args: Any, **kwargs: Any):
    """``dashboard.figures.<builder>(*args, **kwargs)``, built once per distinct input.

    Building a Plotly figure costs 5-60 ms of validation; reruns redraw the same figures, so
    they are reused (Streamlit only serialises them). Treat the returned figure as read-only.
    """
    from dashboard import figures

    return getattr(figures, builder)(*args, **kwargs)
