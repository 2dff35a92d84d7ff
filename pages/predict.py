"""Predict: ask a deployed model about one case (a form from its schema) or many (a CSV)."""

import pandas as pd
import streamlit as st

from dashboard import components as ui
from dashboard.auth import guard
from dashboard.batch import BatchFileError, read_batch_csv
from dashboard.state import clear_listings, config, numeric_ranges, tasks

actor = guard("predict")
st.title("Predict")
backend = ui.backend_or_stop()

BATCH_LIMIT = 20_000  # rows per uploaded file
CHUNK = 250  # rows per request

endpoints = [e for e in ui.fetch("list_endpoints", default=[]) or [] if e.get("EndpointStatus") == "InService"]
if not endpoints:
    ui.empty_state(
        "No model is serving yet",
        "Predictions need an endpoint in service. " + (
            "Deploy an approved version on **Endpoints** (or seed the demo)." if actor.can("deploy_staging")
            else "Ask a data scientist to deploy one; this page fills in by itself once it runs."),
    )
    ui.demo_panel(actor, key="predict_demo")
    st.stop()

order = sorted(endpoints, key=lambda e: (e.get("Stage") != "prod", e["EndpointName"]))
labels = {e["EndpointName"]: f"{e['EndpointName']} · {e.get('Stage')} · v{e.get('ModelPackageVersion')}" for e in order}
endpoint_name = st.selectbox("Endpoint", list(labels), format_func=labels.get, key="pred_endpoint")
endpoint = next(e for e in order if e["EndpointName"] == endpoint_name)


@st.cache_resource(show_spinner=False, max_entries=32)
def feature_schema(home_key: str, version: int) -> dict:
    """{'features': [{name, type, categories?}], 'classes': [...], 'label': ..., 'model_data_url'} of a version."""
    record = backend.describe_model_version(version)
    raw = record.get("FeatureSchema") or {}
    if isinstance(raw, list):
        raw = {"features": raw}
    return {"features": list(raw.get("features") or []), "classes": [str(c) for c in raw.get("classes") or []],
            "label": raw.get("label"), "model_data_url": record.get("ModelDataUrl")}


schema = {"features": [], "classes": []}
with ui.attempt("read the model's input schema"):
    schema = feature_schema(f"{config().home}|{backend.project}", endpoint["ModelPackageVersion"])
features = schema["features"]
ranges = {}
with ui.attempt("read the model's training ranges"):
    ranges = numeric_ranges(str(config().home), schema.get("model_data_url"))
if not features:
    st.warning("This model version does not describe its inputs, so no form can be built; use the JSON test box "
               "on **Endpoints** or a CSV with the training columns.")


def show_prediction(result: dict) -> None:
    pred = (result.get("predictions") or [{}])[0]
    confidence = pred.get("confidence")
    cols = st.columns(3)
    cols[0].metric("Prediction", str(pred.get("label")))
    cols[1].metric("Confidence", f"{confidence:.2f}" if isinstance(confidence, (int, float)) else "—")
    cols[2].metric("Model version", result.get("model_version"))
    if pred.get("flagged"):
        st.warning("Low confidence: below the model's threshold ε. Treat this answer with care; your feedback "
                   "(the true outcome) helps the model revise it.", icon=":material/flag:")
    if pred.get("probabilities"):
        st.plotly_chart(ui.figure("probabilities", pred["probabilities"]), key="pred_probs")
    similar = pred.get("similar_cases") or []
    if similar:
        st.markdown("**Why: the most similar stored cases** (fidelity of the quantum states)")
        st.dataframe(pd.DataFrame(similar), hide_index=True, key="pred_similar",
                     column_config={"score": st.column_config.ProgressColumn("score", min_value=0, max_value=1,
                                                                             format="%.3f")})


single, batch = st.tabs(["One case", "Batch (CSV)"])
with single:
    if features:
        with st.form("predict_form", border=True):
            record = {}
            cols = st.columns(min(3, len(features)))
            for i, f in enumerate(features):
                col = cols[i % len(cols)]
                key = f"pred_f_{f['name']}"
                if f.get("type") == "categorical" and f.get("categories"):
                    record[f["name"]] = col.selectbox(f["name"], f["categories"], key=key)
                elif f.get("type") == "boolean":
                    record[f["name"]] = col.checkbox(f["name"], key=key)
                else:
                    seen = ranges.get(f["name"])  # start from a typical case, not from 0 (often out of range)
                    record[f["name"]] = col.number_input(
                        f["name"], value=seen["median"] if seen else 0.0, format="%.4f", key=key,
                        help=f"training cases: {seen['min']:g} to {seen['max']:g} (median {seen['median']:g})"
                        if seen else None)
            asked = st.form_submit_button("Predict", type="primary", icon=":material/online_prediction:")
        if asked:
            with ui.attempt("get a prediction"):
                result = backend.invoke(actor, endpoint_name, {"instances": [record]})
                st.session_state["qcbr_pred_last"] = result
                clear_listings()
    result = st.session_state.get("qcbr_pred_last")
    if result and result.get("endpoint", endpoint_name) == endpoint_name:
        show_prediction(result)
        iid = result.get("inference_id") or (result.get("predictions") or [{}])[0].get("inference_id")
        with st.form("feedback", border=True):
            st.markdown("**Feedback**: what was the true outcome?")
            options = schema["classes"] or sorted({str(c) for c in (result["predictions"][0].get("probabilities") or {})})
            truth = st.selectbox("True label", options, key="pred_truth") if options else \
                st.text_input("True label", key="pred_truth_text")
            sent = st.form_submit_button("Send feedback")
        if sent:
            with ui.attempt("record the feedback"):
                backend.submit_ground_truth(actor, iid, truth)
                clear_listings()
                st.success("Thanks: recorded as ground truth for this prediction.")


def run_batch(frame: pd.DataFrame, endpoint: str, progress=None) -> pd.DataFrame:
    """Invoke the endpoint chunk by chunk (a background task); one output row per input row."""
    out = []
    for start in range(0, len(frame), CHUNK):
        chunk = frame.iloc[start:start + CHUNK]
        result = backend.invoke(actor, endpoint, {"instances": chunk.to_dict("records")})
        for pred in result.get("predictions") or []:
            top = (pred.get("similar_cases") or [{}])[0]
            out.append({"prediction": pred.get("label"), "confidence": pred.get("confidence"),
                        "flagged": pred.get("flagged"), "most_similar_case": top.get("case_id"),
                        "similarity": top.get("score"),
                        "inference_id": pred.get("inference_id") or result.get("inference_id")})
        if progress:
            progress(min(1.0, (start + CHUNK) / len(frame)), f"{min(len(frame), start + CHUNK):,} of {len(frame):,} rows")
    return pd.concat([frame.reset_index(drop=True), pd.DataFrame(out)], axis=1)


with batch:
    names = [f["name"] for f in features]
    st.caption(f"One case per row with the columns {', '.join(names) if names else '(the training features)'}; "
               f"up to {BATCH_LIMIT:,} rows. Results can be downloaded as CSV.")
    upload = st.file_uploader("Cases to predict (CSV)", type=["csv"], key="pred_batch_file")
    if upload is not None and st.button("Predict all", key="pred_batch_run", type="primary"):
        try:
            frame = read_batch_csv(upload.getvalue(), upload.name)
        except BatchFileError as exc:
            st.error(str(exc))
        else:
            lacking = [n for n in names if n not in frame.columns]
            if lacking:
                st.error(f"{upload.name} lacks the columns {', '.join(lacking)}. Add them (header row, exact names) "
                         f"and upload it again.")
            elif len(frame) == 0 or len(frame) > BATCH_LIMIT:
                st.error(f"{upload.name} has {len(frame):,} rows; send between 1 and {BATCH_LIMIT:,}.")
            else:
                frame = frame[names] if names else frame
                st.session_state["qcbr_pred_batch"] = tasks().submit("batch prediction", actor.name, run_batch,
                                                                     frame, endpoint_name)

    def batch_panel() -> None:
        task = tasks().get(st.session_state.get("qcbr_pred_batch"))
        if task is None:
            return
        if not task.done:
            st.progress(task.fraction, text=f"Predicting… {task.message}")
            return
        if st.session_state.pop("qcbr_pred_batch_polling", False):
            # stop polling: only a full run draws this fragment without run_every (else it reruns each
            # second for as long as the tab is open, re-sending the table and the CSV every time)
            st.rerun(scope="app")
        if task.error is not None:
            ui.show_error(task.error, "predict the batch")
            return
        from qcbr.cases import safe_csv

        result = task.result
        flagged = int(result["flagged"].fillna(False).astype(bool).sum())
        st.success(f"{len(result):,} predictions; {flagged:,} flagged as low confidence.")
        ui.paged_table(result, key="pred_batch_table", page_size=50)
        st.download_button("Download results (CSV)", safe_csv(result), file_name="predictions.csv",
                           mime="text/csv", key="pred_batch_download", icon=":material/download:")

    pending = tasks().get(st.session_state.get("qcbr_pred_batch"))
    polling = pending is not None and not pending.done
    st.session_state["qcbr_pred_batch_polling"] = polling
    st.fragment(batch_panel, run_every=1.0 if polling else None)()
