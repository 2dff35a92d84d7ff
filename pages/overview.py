"""Overview & ROI: where the project stands, the next step, and (later) the ROI assumptions."""
import streamlit as st

from dashboard import components as ui
from dashboard.auth import guard

actor = guard("overview")
st.title("Overview & ROI")
ui.backend_or_stop()

datasets = ui.fetch("list_datasets", default=[]) or []
jobs = ui.fetch("list_training_jobs", default=[]) or []
versions = ui.fetch("list_model_versions", default=[]) or []
endpoints = ui.fetch("list_endpoints", default=[]) or []
predictions = ui.fetch("list_predictions", default=[], limit=1000) or []

ui.metric_row([
    ("Datasets", len({d.get("DatasetName") for d in datasets})),
    ("Training runs", len(jobs)),
    ("Model versions", len(versions)),
    ("Approved", sum(v.get("ModelApprovalStatus") == "Approved" for v in versions)),
    ("Endpoints in service", sum(e.get("EndpointStatus") == "InService" for e in endpoints)),
    ("Recent predictions", f"{len(predictions)}{'+' if len(predictions) >= 1000 else ''}"),
])

steps = [
    ("Upload a case base", bool(datasets), "Cases", "data_scientist"),
    ("Train a model", any(j.get("TrainingJobStatus") == "Completed" for j in jobs), "Training", "data_scientist"),
    ("Register a version", bool(versions), "Registry", "data_scientist"),
    ("Approve it", any(v.get("ModelApprovalStatus") == "Approved" for v in versions), "Registry", "manager"),
    ("Deploy an endpoint", any(e.get("EndpointStatus") == "InService" for e in endpoints), "Endpoints", "data_scientist"),
    ("Make a prediction", bool(predictions), "Predict", "business"),
]
if not all(done for _, done, _, _ in steps):
    st.subheader("Getting started")
    nxt = next(s for s in steps if not s[1])
    for title, done, page, role in steps:
        mark = ":material/check_circle:" if done else ":material/radio_button_unchecked:"
        st.markdown(f"{mark} {title} — *{page}*" + ("  ← **next**" if (title, done, page, role) == nxt else ""))
    if not datasets:
        ui.empty_state(
            "No cases yet",
            "Start by uploading a table of cases (CSV or Parquet) on the **Cases** page — or seed the demo "
            "below to get a trained model and a running endpoint in a minute." if actor.can("seed_demo") else
            "A data scientist starts by uploading a case base; then a model is trained and sent to you for approval.",
        )
    ui.demo_panel(actor, key="overview_demo")

st.subheader("Return on investment")
ui.empty_state(
    "ROI assumptions",
    "The ROI view (value of a correct decision, cost of an error, cost per prediction, baseline accuracy) "
    "is computed by the monitoring module from the predictions and the ground truth collected so far. "
    + ("As a manager you set the assumptions here once it is enabled." if actor.can("edit_roi") else
       "Managers set the assumptions; you see the result."),
    icon=":material/savings:",
)
labelled = ui.fetch("list_ground_truth", default=[]) or []
rows = ui.prediction_rows(predictions, labelled)
ui.metric_row([("Predictions with ground truth", int(rows["true_label"].notna().sum()) if len(rows) else 0),
               ("Flagged (low confidence)", int(rows["flagged"].sum()) if len(rows) else 0)])
