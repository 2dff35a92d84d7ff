"""Training: launch a run, follow it live, stop it; find, filter and compare runs."""
import pandas as pd
import streamlit as st

from dashboard import components as ui
from dashboard.auth import guard
from dashboard.state import clear_listings

actor = guard("training")
st.title("Training")
backend = ui.backend_or_stop()

FEATURE_MAPS = ("zz", "angle", "amplitude")
RUNNING = ("InProgress", "Stopping")


def accuracy(job: dict) -> float | None:
    for m in job.get("FinalMetricDataList") or []:
        if m.get("MetricName") in ("validation:accuracy", "accuracy"):
            return float(m["Value"])
    return None


def metrics_of(job: dict) -> dict[str, float]:
    return {m["MetricName"]: float(m["Value"]) for m in job.get("FinalMetricDataList") or []
            if isinstance(m.get("Value"), (int, float))}


datasets = ui.fetch("list_datasets", default=[]) or []
jobs = ui.fetch("list_training_jobs", default=[]) or []

# ------------------------------------------------------------------------------------- launch
with st.expander("Launch a training run", expanded=not jobs, icon=":material/rocket_launch:"):
    if not datasets:
        ui.empty_state("Nothing to train on yet", "Upload a case base on **Cases** first (or seed the demo).")
        ui.demo_panel(actor, key="training_demo")
    else:
        names = sorted({d["DatasetName"] for d in datasets})
        with st.form("launch", border=False):
            c1, c2, c3 = st.columns(3)
            dataset = c1.selectbox("Dataset", names, key="train_dataset")
            feature_map = c2.selectbox("Feature map", FEATURE_MAPS, key="train_map",
                                       help="zz: entangling (needs a tuned alpha); angle: product states; "
                                            "amplitude: cosine similarity")
            qubits = c3.selectbox("Qubits", ["auto"] + list(range(1, 13)), index=0, key="train_qubits",
                                  help="auto: one per feature, PCA beyond the budget")
            c1, c2, c3 = st.columns(3)
            auto_alpha = c1.toggle("Tune alpha by cross-validation", value=True, key="train_auto_alpha")
            alpha = c1.number_input("alpha (when not tuned)", min_value=0.01, max_value=4.0, value=0.5, step=0.05,
                                    key="train_alpha")
            auto_k = c2.toggle("Tune k by cross-validation", value=True, key="train_auto_k")
            k = c2.number_input("k (when not tuned)", min_value=1, max_value=50, value=5, key="train_k")
            reuse = c3.selectbox("Reuse", ["vote", "variational"], key="train_reuse",
                                 help="vote: similarity-weighted vote of the k nearest; variational: the qCBR "
                                      "paper's data re-uploading classifier")
            c1, c2, c3 = st.columns(3)
            similarity = c1.selectbox("Similarity", ["exact", "sampled"], key="train_similarity",
                                      help="exact: statevectors; sampled: shots on qiskit-aer (slow)")
            shots = c2.select_slider("Shots (sampled)", [256, 512, 1024, 2048, 4096], value=1024, key="train_shots")
            epsilon = c3.slider("Confidence threshold ε", 0.0, 1.0, 0.6, 0.05, key="train_epsilon",
                                help="predictions below it are flagged for review")
            job_name = st.text_input("Run name (optional)", key="train_job_name",
                                     help="letters, digits and '-'; a name is generated when empty")
            launched = st.form_submit_button("Launch run", type="primary", icon=":material/play_arrow:")
        if launched:
            hps = {
                "feature_map": feature_map, "n_qubits": str(qubits), "alpha": "auto" if auto_alpha else str(alpha),
                "k": "auto" if auto_k else str(int(k)), "reuse": reuse, "similarity": similarity,
                "shots": str(int(shots)), "epsilon": str(epsilon), "random_state": "0",
            }
            if qubits == "auto":
                hps.pop("n_qubits")
            with ui.attempt("launch the run"):
                job = backend.create_training_job(actor, dataset, hps, job_name=job_name.strip() or None)
                st.session_state["qcbr_training_job"] = job["TrainingJobName"]
                st.session_state["qcbr_training_focus"] = job["TrainingJobName"]
                clear_listings()
                st.toast(f"Launched {job['TrainingJobName']}", icon=":material/rocket_launch:")
                st.rerun()

# --------------------------------------------------------------------------------------- live
if not jobs and not st.session_state.get("qcbr_training_job"):
    ui.empty_state("No runs yet", "Launch one above: a run trains a qCBR classifier on a dataset version as a "
                   "background job, and you can follow its progress here.")
    st.stop()

names = [j["TrainingJobName"] for j in jobs]
current = st.session_state.get("qcbr_training_job")
if current not in names and names:
    running = [j["TrainingJobName"] for j in jobs if j.get("TrainingJobStatus") in RUNNING]
    current = running[0] if running else names[0]
focus = st.session_state.pop("qcbr_training_focus", None)
if focus in names:
    st.session_state["train_watch"] = focus
elif st.session_state.get("train_watch") not in names and current in names:
    st.session_state["train_watch"] = current
watched = st.selectbox("Follow run", names, key="train_watch") if names else current


def live_panel() -> None:
    try:
        job = backend.describe_training_job(watched)
    except Exception as exc:  # noqa: BLE001
        ui.show_error(exc, f"read run {watched}")
        return
    status = job.get("TrainingJobStatus")
    st.markdown(f"### {watched} {ui.badge(status)}")
    progress = job.get("Progress") or {}
    st.progress(float(progress.get("Fraction") or (1.0 if status == "Completed" else 0.0)),
                text=progress.get("Message") or job.get("SecondaryStatus") or "")
    if job.get("FailureReason"):
        st.error(f"Failed: {job['FailureReason']}")
    cols = st.columns(3)
    cols[0].caption(f"Dataset **{(job.get('Lineage') or {}).get('DatasetName')}** "
                    f"{((job.get('Lineage') or {}).get('DatasetSha256') or '')[:12]}")
    cols[1].caption(f"Started {job.get('TrainingStartTime') or job.get('CreationTime')}")
    cols[2].caption(f"By {job.get('CreatedBy')}")
    if status in RUNNING:
        if st.button("Stop run", key="train_stop", icon=":material/stop:"):
            with ui.attempt("stop the run"):
                backend.stop_training_job(actor, watched)
                clear_listings()
                st.rerun()
    elif status == "Completed":
        st.success(f"Validation accuracy {accuracy(job):.3f}." if accuracy(job) is not None else "Completed.")
        versions = [v for v in ui.fetch("list_model_versions", default=[]) or []
                    if (v.get("Lineage") or {}).get("TrainingJobName") == watched]
        if versions:
            st.caption(f"Registered as version {versions[0]['ModelPackageVersion']} "
                       f"({versions[0]['ModelApprovalStatus']}) on **Registry**.")
        else:
            st.caption("Register it as a model version on **Registry**.")
    with st.expander("Log", expanded=status in RUNNING or status == "Failed"):  # the why of a failure
        st.code(job.get("Log") or "(no output yet)", language=None)
    if st.session_state.get("qcbr_training_was_running") and status not in RUNNING:
        st.session_state.pop("qcbr_training_was_running")
        clear_listings()
        st.rerun(scope="app")  # refresh the runs table once the run ends
    if status in RUNNING:
        st.session_state["qcbr_training_was_running"] = True


watched_status = next((j.get("TrainingJobStatus") for j in jobs if j["TrainingJobName"] == watched), "InProgress")
st.fragment(live_panel, run_every=2.0 if watched_status in RUNNING else None)()

# --------------------------------------------------------------------------------------- runs
st.subheader("Runs")
rows = []
for j in jobs:
    hp = j.get("HyperParameters") or {}
    rows.append({
        "run": j["TrainingJobName"], "status": j.get("TrainingJobStatus"),
        "dataset": (j.get("Lineage") or {}).get("DatasetName"), "feature_map": hp.get("feature_map"),
        "qubits": hp.get("n_qubits", "auto"), "alpha": hp.get("alpha"), "k": hp.get("k"),
        "reuse": hp.get("reuse"), "similarity": hp.get("similarity"), "accuracy": accuracy(j),
        "created": j.get("CreationTime"), "by": j.get("CreatedBy"),
    })
table = pd.DataFrame(rows)
c1, c2 = st.columns([1, 2])
statuses = sorted(table["status"].dropna().unique().tolist())
keep = c1.multiselect("Status", statuses, default=statuses, key="train_filter_status")
text = c2.text_input("Filter by run, dataset or feature map", key="train_filter_text")
view = table[table["status"].isin(keep)]
if text:
    needle = text.lower()
    view = view[view[["run", "dataset", "feature_map"]].astype(str).apply(
        lambda col: col.str.lower().str.contains(needle, regex=False)).any(axis=1)]
ui.paged_table(view.reset_index(drop=True), key="train_runs", page_size=25,
               column_config={"accuracy": st.column_config.ProgressColumn("accuracy", min_value=0, max_value=1,
                                                                           format="%.3f")})

st.subheader("Compare runs")
completed = [r["run"] for r in rows if r["status"] == "Completed"]
chosen = st.multiselect("Runs to compare", completed, default=completed[:2], key="train_compare",
                        max_selections=8)
if chosen:
    by_name = {j["TrainingJobName"]: j for j in jobs}
    metric_table = {c: metrics_of(by_name[c]) for c in chosen}
    params = pd.DataFrame({c: by_name[c].get("HyperParameters") or {} for c in chosen})
    scalar = {c: {m: v for m, v in ms.items() if "accuracy" in m or "recall" in m} for c, ms in metric_table.items()}
    st.plotly_chart(ui.figure("compare_metrics", scalar), key="train_compare_fig")
    left, right = st.columns(2)
    left.markdown("**Metrics**")
    left.dataframe(pd.DataFrame(metric_table), key="train_compare_metrics")
    right.markdown("**Hyperparameters**")
    right.dataframe(params.astype(str), key="train_compare_params")
elif not completed:
    st.caption("Completed runs can be compared here.")
