"""Monitoring: traffic, confidence and ground truth per endpoint (drift and decay reports join later)."""
import pandas as pd
import streamlit as st

from dashboard import components as ui
from dashboard import figures
from dashboard.auth import guard

actor = guard("monitoring")
st.title("Monitoring")
backend = ui.backend_or_stop()

LIMIT = 5000
endpoints = ui.fetch("list_endpoints", default=[]) or []
if not endpoints:
    ui.empty_state("Nothing to monitor yet", "Monitoring starts once an endpoint serves predictions: deploy one on "
                   "**Endpoints**. Every prediction is captured, and ground truth from users measures accuracy.")
    st.stop()

names = ["(all)"] + [e["EndpointName"] for e in endpoints]
chosen = st.selectbox("Endpoint", names, key="mon_endpoint")
kwargs = {} if chosen == "(all)" else {"endpoint": chosen}
records = ui.fetch("list_predictions", default=[], limit=LIMIT, **kwargs) or []
truth = ui.fetch("list_ground_truth", default=[], **kwargs) or []
rows = ui.prediction_rows(records, truth)

labelled = rows["true_label"].notna() if len(rows) else pd.Series(dtype=bool)
ui.metric_row([
    ("Endpoints in service", sum(e.get("EndpointStatus") == "InService" for e in endpoints)),
    ("Predictions (recent)", f"{len(rows):,}{'+' if len(records) >= LIMIT else ''}"),
    ("Flagged", int(rows["flagged"].sum()) if len(rows) else 0),
    ("Ground truth", int(labelled.sum()) if len(rows) else 0),
    ("Accuracy on labelled", f"{100 * rows.loc[labelled, 'correct'].astype(bool).mean():.0f}%"
     if len(rows) and labelled.any() else None),
])

if len(rows):
    times = pd.to_datetime(rows["time"], utc=True, errors="coerce")
    day = times.dt.strftime("%Y-%m-%d")
    counts = pd.crosstab(day, rows["endpoint"].fillna("?"))
    st.plotly_chart(figures.predictions_over_time(list(counts.index),
                                                  {c: counts[c].tolist() for c in counts.columns}),
                    key="mon_traffic")
    st.plotly_chart(figures.confidence_histogram(rows["confidence"].dropna().astype(float)), key="mon_confidence")
else:
    st.info("No predictions captured yet for this selection.")

st.subheader("Drift and decay")
ui.empty_state(
    "Drift reports",
    "Feature drift against the training baseline (SageMaker Model Monitor's statistics and constraints) and "
    "accuracy decay from ground truth appear here, per endpoint and monitoring run.",
    icon=":material/query_stats:",
)
