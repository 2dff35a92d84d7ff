"""Overview & ROI: where the project stands and what the model is worth.

KPIs with their change (predictions, accuracy from ground truth, ROI, cost), ROI in production
over time with its break-even, the expected ROI of each model version from its validation
confusion matrix, and the business assumptions behind every money figure: managers edit them
(audited, shown below); data scientists see the results. ROI numbers are estimates and say so.
"""
from datetime import datetime, timezone

import pandas as pd
import streamlit as st

from dashboard import components as ui
from dashboard import monitoring_data as data
from dashboard import monitoring_figures as mf
from dashboard.auth import current_actor, guard
from dashboard.state import config

actor = guard("overview")
st.title("Overview & ROI")
ui.backend_or_stop()
project = config().project

PERIODS = {"Last 7 days": 7, "Last 30 days": 30, "Last 90 days": 90, "All time": None}
FREQS = {"Hour": ("h", 1), "Day": ("D", 7), "Week": ("W", 28)}  # window, KPI comparison period (days)
WINDOW = {"h": pd.Timedelta(hours=1), "D": pd.Timedelta(days=1), "W": pd.Timedelta(days=7)}
FIELDS = {  # assumption -> (label, kind)
    "currency": ("Currency", "text"),
    "value_correct": ("Value of a correct prediction", "money"),
    "default_error_cost": ("Cost of a wrong prediction (default)", "money"),
    "monthly_volume": ("Predictions per month", "count"),
    "instance_type": ("Endpoint instance type", "text"),
    "hourly_price": ("Instance price per hour", "money"),
    "instance_count": ("Instances", "count"),
    "training_cost": ("Training cost (one-off)", "money"),
}

datasets = ui.fetch("list_datasets", default=[]) or []
jobs = ui.fetch("list_training_jobs", default=[]) or []
versions = ui.fetch("list_model_versions", default=[]) or []
endpoints = ui.fetch("list_endpoints", default=[]) or []
predicted = bool(ui.fetch("list_predictions", default=[], limit=1))

ui.metric_row([
    ("Datasets", len({d.get("DatasetName") for d in datasets})),
    ("Training runs", len(jobs)),
    ("Model versions", len(versions)),
    ("Approved", sum(v.get("ModelApprovalStatus") == "Approved" for v in versions)),
    ("Endpoints in service", sum(e.get("EndpointStatus") == "InService" for e in endpoints)),
])

steps = [
    ("Upload a case base", bool(datasets), "Cases"),
    ("Train a model", any(j.get("TrainingJobStatus") == "Completed" for j in jobs), "Training"),
    ("Register a version", bool(versions), "Registry"),
    ("Approve it", any(v.get("ModelApprovalStatus") == "Approved" for v in versions), "Registry"),
    ("Deploy an endpoint", any(e.get("EndpointStatus") == "InService" for e in endpoints), "Endpoints"),
    ("Make a prediction", predicted, "Predict"),
]
if not all(done for _, done, _ in steps):
    st.subheader("Getting started")
    nxt = next(s for s in steps if not s[1])
    for step in steps:
        mark = ":material/check_circle:" if step[1] else ":material/radio_button_unchecked:"
        st.markdown(f"{mark} {step[0]} — *{step[2]}*" + ("  ← **next**" if step == nxt else ""))
    if not datasets:
        ui.empty_state(
            "No cases yet",
            "Start by uploading a table of cases (CSV or Parquet) on the **Cases** page — or seed the demo "
            "below to get a trained model and a running endpoint in a minute." if actor.can("seed_demo") else
            "A data scientist starts by uploading a case base; then a model is trained and sent to you for approval.",
        )
    ui.demo_panel(actor, key="overview_demo")


def money(value, currency: str) -> str | None:
    return None if value is None or pd.isna(value) else f"{currency} {value:,.0f}"


def pct(value) -> str | None:
    return None if value is None or pd.isna(value) else f"{100 * value:.1f}%"


def when(iso) -> str:
    return "—" if not iso else str(iso)[:19].replace("T", " ") + " UTC"


# ---------------------------------------------------------------------------- production
st.subheader("Return on investment")
assumed = data.assumptions(project)
currency = assumed["currency"]
st.caption(f"Every money figure is an **estimate** from the business assumptions at the bottom of this page "
           f"({'set by ' + str(assumed['updated_by']) + ' at ' + when(assumed['updated_at']) if assumed.get('updated_by') else 'defaults: no manager has set them yet'}).")

if not endpoints:
    ui.empty_state("No endpoint serves predictions yet",
                   "ROI in production is measured from the predictions an endpoint serves, their ground truth and the "
                   "endpoint's uptime. Deploy an approved version on **Endpoints**; the expected ROI of each version is "
                   "below meanwhile.")
else:
    ranked = sorted(endpoints, key=lambda e: (e.get("Stage") != "prod", e.get("EndpointStatus") != "InService",
                                              e["EndpointName"]))
    names = [e["EndpointName"] for e in ranked]
    c1, c2, c3 = st.columns([2, 1, 1])
    endpoint = c1.selectbox("Endpoint", names, key="ov_endpoint",
                            format_func=lambda n: f"{n} ({next(e for e in ranked if e['EndpointName'] == n).get('Stage')})")
    period = c2.selectbox("Period", list(PERIODS), index=1, key="ov_period")
    freq_name = c3.selectbox("Window", list(FREQS), index=1, key="ov_freq")
    freq, compare_days = FREQS[freq_name]
    record = next(e for e in ranked if e["EndpointName"] == endpoint)
    with ui.attempt(f"compute the ROI of {endpoint}"):
        from qcbr.monitoring.roi import break_even, kpi_deltas

        frame = data.production(record, PERIODS[period], freq, assumed)
        kpis = kpi_deltas(frame, assumed, period_days=compare_days, now=datetime.now(timezone.utc))
        cur, delta = kpis["current"], kpis["delta"]
        series = mf.kpi_series(frame, ["predictions", "accuracy", "net", "roi", "hosting_cost"])
        st.caption(f"KPIs of the last {compare_days} days; the change is against the {compare_days} days before.")
        cols = st.columns(5)
        cols[0].metric("Predictions", f"{cur['predictions']:,}", delta=delta.get("predictions"),
                       chart_data=series.get("predictions"), border=True)
        cols[1].metric("Accuracy (ground truth)", pct(cur["accuracy"]) or "—",
                       delta=None if delta.get("accuracy") is None else f"{100 * delta['accuracy']:+.1f} pts",
                       help=f"on {cur['labelled']:,} predictions with ground truth", border=True)
        cols[2].metric("Net value (estimate)", money(cur["net"], currency), delta=money(delta.get("net"), currency),
                       chart_data=series.get("net"), border=True)
        cols[3].metric("ROI (estimate)", pct(cur["roi"]) or "—",
                       delta=None if delta.get("roi") is None else f"{100 * delta['roi']:+.1f} pts", border=True)
        cols[4].metric("Cost", money(cur["cost"], currency), delta=money(delta.get("cost"), currency),
                       delta_color="inverse", chart_data=series.get("hosting_cost"), border=True)
        if len(frame) and int(frame["labelled"].sum()) == 0:
            ui.empty_state(
                f"No ground truth for {endpoint} in this period",
                "Accuracy and the value of predictions come from their true outcomes; until some arrive only the "
                "costs count. Users give them on **Predict** / **My predictions** (or `qcbr ground-truth`).")
        be = break_even(frame)
        st.plotly_chart(mf.roi_over_time(frame, currency, be, WINDOW[freq]), key="ov_roi_fig")
        total_net = float(frame["net"].sum()) if len(frame) else 0.0
        st.caption(f"Over the period: net {money(total_net, currency)}; "
                   + (f"break-even reached in the window starting {be}." if be is not None and total_net >= 0
                      else "break-even not reached yet." if len(frame) else "no traffic yet."))

# ------------------------------------------------------------------------------ versions
st.subheader("Model versions compared")
if not versions:
    ui.empty_state("No model versions yet", "Each registered version's expected ROI is computed from its validation "
                   "confusion matrix and the assumptions. Register a completed run on **Registry**.")
else:
    horizon = st.number_input("Horizon (months)", 1, 120, 12, key="ov_horizon")
    with ui.attempt("compare the versions"):
        from qcbr.monitoring.roi import cumulative_value_curve

        compared = data.compare_versions(versions, assumed, int(horizon))
        st.plotly_chart(mf.version_comparison(compared, currency), key="ov_versions_fig")
        usable = compared[compared["monthly_net"].notna()] if "monthly_net" in compared else compared.iloc[0:0]
        curves = {f"v{r['version']}": cumulative_value_curve(r, assumed["training_cost"], months=max(24, int(horizon)))
                  for r in usable.to_dict("records")}
        st.plotly_chart(mf.break_even_projection(curves, currency), key="ov_breakeven_fig")
        columns = [c for c in ("version", "status", "accuracy", "value_per_prediction", "monthly_value",
                               "monthly_error_cost", "monthly_hosting_cost", "monthly_net", "roi", "break_even_months",
                               "break_even_monthly_volume", "note") if c in compared]
        st.dataframe(compared[columns], hide_index=True, key="ov_versions", column_config={
            "accuracy": st.column_config.NumberColumn(format="percent"),
            "value_per_prediction": st.column_config.NumberColumn(format="%.2f"),
            **{c: st.column_config.NumberColumn(c.replace("_", " "), format="%.0f")
               for c in ("monthly_value", "monthly_error_cost", "monthly_hosting_cost", "monthly_net")},
            "roi": st.column_config.NumberColumn(f"ROI over {int(horizon)} months", format="percent"),
            "break_even_months": st.column_config.NumberColumn("break-even (months)", format="%.1f"),
            "break_even_monthly_volume": st.column_config.NumberColumn("break-even volume / month", format="%.0f")})

# --------------------------------------------------------------------------- assumptions
st.subheader("Business assumptions")
st.info("These are **assumptions**, not measurements: what a correct prediction is worth, what each kind of error "
        "costs, the volume and the endpoint's price. Every ROI figure above follows from them.",
        icon=":material/lightbulb:")
classes = sorted({str(c) for v in versions for c in ((v.get("FeatureSchema") or {}).get("classes") or [])})
PAIRS_KEY, CLASS_KEY = "ov_a_error_costs", "ov_a_by_class"


def pair_frame(a: dict) -> pd.DataFrame:
    pairs = data.error_pairs(versions)
    pairs += [k for k in a["error_costs"] if k not in pairs]
    return pd.DataFrame({"truth -> predicted": pairs, "cost": [a["error_costs"].get(k) for k in pairs]})


def class_frame(a: dict) -> pd.DataFrame:
    names = classes + [c for c in a["value_correct_by_class"] if c not in classes]
    return pd.DataFrame({"class": names, "value if correct": [a["value_correct_by_class"].get(c) for c in names]})


def edited(base: pd.DataFrame, key: str) -> pd.DataFrame:
    """The data editor's table: its base plus the edits Streamlit keeps in session state."""
    out = base.copy()
    for row, changes in ((st.session_state.get(key) or {}).get("edited_rows") or {}).items():
        for column, value in changes.items():
            out.loc[int(row), column] = value
    return out


def save_assumptions() -> None:
    """The Save button's callback: runs before the page, as whoever is logged in *now* (a role
    changed since the form was drawn is refused by the library, and the refusal is shown)."""
    from qcbr.monitoring.roi import update_assumptions

    who = current_actor()
    if who is None:
        return
    current = data.assumptions(project)
    changes = {}
    for name, (_, kind) in FIELDS.items():
        value = st.session_state.get(f"ov_a_{name}")
        if value is None:
            continue
        value = value.strip() if kind == "text" else (int(value) if kind == "count" else float(value))
        if value != current[name]:
            changes[name] = value
    costs = {str(r["truth -> predicted"]): float(r["cost"]) for r in edited(pair_frame(current), PAIRS_KEY).to_dict("records")
             if r["cost"] is not None and not pd.isna(r["cost"])}
    by_class = {str(r["class"]): float(r["value if correct"]) for r in edited(class_frame(current), CLASS_KEY).to_dict("records")
                if r["value if correct"] is not None and not pd.isna(r["value if correct"])}
    if costs != current["error_costs"]:
        changes["error_costs"] = costs
    if by_class != current["value_correct_by_class"]:
        changes["value_correct_by_class"] = by_class
    try:
        update_assumptions(who, data.store(), project, changes)
    except Exception as exc:  # noqa: BLE001 - shown on the page by the script that follows
        st.session_state["qcbr_roi_error"] = exc
        return
    data.clear("roi")  # the ROI frames are keyed by the assumptions: they follow by themselves
    st.session_state["qcbr_roi_saved"] = sorted(changes)
    for key in [f"ov_a_{n}" for n in FIELDS] + [PAIRS_KEY, CLASS_KEY]:
        st.session_state.pop(key, None)  # redraw from what is stored now


failure = st.session_state.pop("qcbr_roi_error", None)
if failure is not None:
    ui.show_error(failure, "save the assumptions")
saved = st.session_state.pop("qcbr_roi_saved", None)
if saved is not None:
    st.success(f"Assumptions saved ({', '.join(saved)}); the change is in the audit trail below." if saved
               else "Nothing changed.")

if actor.can("edit_roi"):
    st.caption("As a manager you set the assumptions; every change is recorded with who, when, old and new value.")
    with st.form("ov_assumptions_form"):
        cols = st.columns(4)
        for i, (name, (label, kind)) in enumerate(FIELDS.items()):
            col = cols[i % 4]
            if kind == "text":
                col.text_input(label, value=str(assumed[name]), key=f"ov_a_{name}")
            elif kind == "count":
                col.number_input(label, min_value=1 if name == "instance_count" else 0, value=int(assumed[name]),
                                 step=1, key=f"ov_a_{name}")
            else:
                price = name == "hourly_price"
                col.number_input(label, min_value=0.0, value=float(assumed[name]), step=0.001 if price else 1.0,
                                 format="%.4f" if price else "%.2f", key=f"ov_a_{name}")
        c1, c2 = st.columns(2)
        c1.markdown("Cost of each kind of error (empty = the default cost)")
        c1.data_editor(pair_frame(assumed), hide_index=True, num_rows="fixed", key=PAIRS_KEY,
                       disabled=["truth -> predicted"], column_config={"cost": st.column_config.NumberColumn(min_value=0)})
        c2.markdown("Value of a correct prediction per class (empty = the value above)")
        c2.data_editor(class_frame(assumed), hide_index=True, num_rows="fixed", key=CLASS_KEY, disabled=["class"],
                       column_config={"value if correct": st.column_config.NumberColumn(min_value=0)})
        st.form_submit_button("Save assumptions", type="primary", icon=":material/save:", key="ov_a_save",
                              on_click=save_assumptions)
else:
    st.caption("Managers set the assumptions; you see the result.")
    shown = {FIELDS[k][0]: assumed[k] for k in FIELDS}
    shown["Error costs (truth -> predicted)"] = ", ".join(f"{k}: {v:g}" for k, v in assumed["error_costs"].items()) or "default"
    shown["Value per class"] = ", ".join(f"{k}: {v:g}" for k, v in assumed["value_correct_by_class"].items()) or "default"
    st.dataframe(pd.DataFrame({"assumption": list(shown), "value": [str(v) for v in shown.values()]}),
                 hide_index=True, key="ov_assumptions_view")

st.markdown("**Audit trail of the assumptions**")
audit = data.assumptions_audit(project)
if not audit:
    st.caption("No changes yet: the defaults apply.")
else:
    st.dataframe(pd.DataFrame([{"when": when(e.get("when")), "who": e.get("who"), "role": e.get("role"),
                                "assumption": e.get("field"), "old": str(e.get("old")), "new": str(e.get("new"))}
                               for e in audit]), hide_index=True, key="ov_audit")
