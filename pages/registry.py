"""Registry: model versions, their metrics, lineage and model card; register, approve/reject, deploy."""
import pandas as pd
import streamlit as st

from dashboard import components as ui
from dashboard.auth import guard
from dashboard.state import clear_listings, config, model_card

actor = guard("registry")
st.title("Registry")
backend = ui.backend_or_stop()

versions = ui.fetch("list_model_versions", default=[]) or []
jobs = ui.fetch("list_training_jobs", default=[]) if actor.can("register_model") else []
endpoints = ui.fetch("list_endpoints", default=[]) or []


@st.cache_resource(show_spinner="Writing the model card…", max_entries=32)
def live_model_card(home: str, number: int, modified: str) -> str | None:
    """The card rendered from the current record (approvals included); None without the renderer."""
    try:
        from qcbr.monitoring.model_card import render_model_card
    except ModuleNotFoundError:
        return None
    record = backend.describe_model_version(number)
    lineage = record.get("Lineage") or {}
    dataset = None
    if lineage.get("DatasetName"):
        try:
            dataset = backend.describe_dataset(lineage["DatasetName"], lineage.get("DatasetSha256"))
        except Exception:  # noqa: BLE001 - the card says n/a for what it lacks
            dataset = None
    return render_model_card(version=record, dataset=dataset, project=backend.project)


def learned(name: str, version: dict) -> tuple[str, str | None]:
    """(label, value) of a hyperparameter as the model uses it: the tuned value when it was "auto"."""
    asked = (version.get("HyperParameters") or {}).get(name)
    value = (version.get("ModelMetrics") or {}).get(name)
    if value is None:
        return name, asked
    return (f"{name} (tuned)" if asked in (None, "auto") else name), f"{float(value):g}"


def accuracy(metrics: dict) -> float | None:
    for key in ("validation:accuracy", "accuracy", "cv:accuracy"):
        if key in (metrics or {}):
            return float(metrics[key])
    return None


# ---------------------------------------------------------------------------------- register
if actor.can("register_model"):
    registered_jobs = {(v.get("Lineage") or {}).get("TrainingJobName") for v in versions}
    candidates = [j["TrainingJobName"] for j in jobs or []
                  if j.get("TrainingJobStatus") == "Completed" and j["TrainingJobName"] not in registered_jobs]
    with st.expander("Register a completed run", expanded=bool(candidates) and not versions,
                     icon=":material/add_box:"):
        if not candidates:
            st.caption("Every completed run is registered already; launch one on **Training**.")
        else:
            with st.form("register", border=False):
                job_name = st.selectbox("Run", candidates, key="reg_job")
                min_acc = st.number_input("Refuse below this validation accuracy (0 = no gate)", 0.0, 1.0, 0.0,
                                          0.05, key="reg_min_acc")
                description = st.text_input("Description", key="reg_description")
                go = st.form_submit_button("Register", type="primary")
            if go:
                with ui.attempt("register the run"):
                    record = backend.register_model(actor, job_name, min_accuracy=min_acc or None,
                                                    description=description)
                    clear_listings()
                    st.session_state["qcbr_reg_focus"] = record["ModelPackageVersion"]
                    st.success(f"Registered version {record['ModelPackageVersion']}: waiting for a manager's approval.")
                    versions = ui.fetch("list_model_versions", default=[]) or []

if not versions:
    ui.empty_state(
        "No model versions yet",
        "A version is registered from a completed training run (by a data scientist) and then approved or "
        "rejected by a manager." + (" Launch a run on **Training**." if actor.can("create_training_job") else ""),
    )
    ui.demo_panel(actor, key="registry_demo")
    st.stop()

# ------------------------------------------------------------------------------------ versions
pending = sum(v.get("ModelApprovalStatus") == "PendingManualApproval" for v in versions)
if pending and actor.can("approve_model"):
    st.info(f"{pending} version(s) wait for your decision.", icon=":material/pending_actions:")
table = pd.DataFrame([{
    "version": v["ModelPackageVersion"], "status": v.get("ModelApprovalStatus"),
    "accuracy": accuracy(v.get("ModelMetrics") or {}), "dataset": (v.get("Lineage") or {}).get("DatasetName"),
    "run": (v.get("Lineage") or {}).get("TrainingJobName"),
    "endpoints": ", ".join((v.get("Lineage") or {}).get("Endpoints") or []),
    "created": v.get("CreationTime"), "by": v.get("CreatedBy"),
} for v in versions])
ui.paged_table(table, key="reg_versions", page_size=20,
               column_config={"accuracy": st.column_config.ProgressColumn("accuracy", min_value=0, max_value=1,
                                                                           format="%.3f")})

numbers = [v["ModelPackageVersion"] for v in versions]
focus = st.session_state.pop("qcbr_reg_focus", None)
if focus in numbers:
    st.session_state["reg_version"] = focus
number = st.selectbox("Version", numbers, key="reg_version",
                      format_func=lambda n: f"v{n} · {next(v['ModelApprovalStatus'] for v in versions if v['ModelPackageVersion'] == n)}")
version = next(v for v in versions if v["ModelPackageVersion"] == number)
status = version.get("ModelApprovalStatus")
st.markdown(f"### Version {number} {ui.badge(status)}")

details, card_tab, history_tab = st.tabs(["Metrics & lineage", "Model card", "Approval history"])
with details:
    metrics = version.get("ModelMetrics") or {}
    ui.metric_row([("Validation accuracy", f"{accuracy(metrics):.3f}" if accuracy(metrics) is not None else None),
                   ("CV accuracy", f"{metrics['cv:accuracy']:.3f}" if "cv:accuracy" in metrics else None),
                   learned("alpha", version), learned("k", version)])
    recalls = {k.split(":", 2)[-1]: v for k, v in metrics.items() if "recall" in k}
    if recalls:
        st.plotly_chart(ui.figure("category_bars", recalls, "Recall per class"), key="reg_recall")
    lineage = version.get("Lineage") or {}
    st.markdown(
        f"**Lineage**: dataset `{lineage.get('DatasetName')}` @ `{(lineage.get('DatasetSha256') or '')[:12]}` → "
        f"run `{lineage.get('TrainingJobName')}` → version **{number}** → endpoints "
        f"{', '.join(f'`{e}`' for e in lineage.get('Endpoints') or []) or '(none)'}"
    )
    with st.expander("All metrics and hyperparameters"):
        st.json({"metrics": metrics, "hyperparameters": version.get("HyperParameters"),
                 "artifact": version.get("ModelDataUrl"), "description": version.get("ModelPackageDescription")})
with card_tab:
    card = None
    with ui.attempt("build the model card"):
        card = live_model_card(str(config().home), number, version.get("LastModifiedTime") or "")
    if card is None:
        with ui.attempt("read the model card"):
            card = model_card(str(config().home), version.get("ModelDataUrl"))
    if card:
        st.download_button("Download the model card (Markdown)", card.encode("utf-8"),
                           file_name=f"model-card-v{number}.md", mime="text/markdown", key="reg_card_download")
    st.markdown(card or "_This version's artifact has no model card._")
with history_tab:
    history = version.get("ApprovalHistory") or []
    if history:
        st.dataframe(pd.DataFrame(history), hide_index=True, key="reg_history")
    else:
        st.caption("No decision yet.")

# ------------------------------------------------------------------------------------ decide
if actor.can("approve_model"):
    st.subheader("Decision")
    with st.form("decide", border=True):
        comment = st.text_area("Comment (recorded with your decision)", key="reg_comment",
                               placeholder="e.g. validated on Q3 data; recall of the minority class acceptable")
        c1, c2 = st.columns(2)
        approve = c1.form_submit_button("Approve", type="primary", icon=":material/check:")
        reject = c2.form_submit_button("Reject", icon=":material/close:")
    if approve or reject:
        with ui.attempt("record the decision"):
            if approve:
                backend.approve_model(actor, number, comment)
            else:
                backend.reject_model(actor, number, comment)
            clear_listings()
            st.toast(f"Version {number} {'approved' if approve else 'rejected'}")
            st.rerun()

# ------------------------------------------------------------------------------------ deploy
if actor.can("deploy_staging"):
    st.subheader("Deploy")
    stages = ["staging"] + (["prod"] if actor.can("deploy_prod") else [])
    existing = {e["EndpointName"]: e for e in endpoints}
    # outside the form, so that the suggested endpoint name follows the stage
    stage = st.radio("Stage", stages, horizontal=True, key="reg_stage", help="prod needs an approved version and a manager")
    ui.name_follows_stage("reg_endpoint", backend.project, stage)
    with st.form("deploy", border=True):
        name = st.text_input("Endpoint name", key="reg_endpoint",
                             help="an existing endpoint is updated blue/green to this version").strip()
        deploy = st.form_submit_button("Deploy this version", type="primary", icon=":material/cloud_upload:")
    current_stage = (existing.get(name) or {}).get("Stage")
    if deploy and current_stage and current_stage != stage:
        st.error(f"{name} is a {current_stage} endpoint, so deploying there would update it in {current_stage}, "
                 f"not {stage}. Give the {stage} endpoint its own name, or pick {current_stage} to update {name}.")
    elif deploy:
        with ui.attempt("deploy"):
            if name in existing:
                record = backend.update_endpoint(actor, name, number)
                verb = "Updating"
            else:
                record = backend.create_endpoint(actor, name, number, stage=stage)
                verb = "Creating"
            clear_listings()
            st.success(f"{verb} endpoint {record['EndpointName']} with version {number} "
                       f"({record.get('EndpointStatus')}); follow it on **Endpoints**.")
    if status != "Approved":
        st.caption("Only approved versions can go to prod; staging takes any version.")
