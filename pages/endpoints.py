"""Endpoints: what is deployed where; deploy, update blue/green, restart, delete; try it with JSON."""
import json
import time

import pandas as pd
import streamlit as st

from dashboard import components as ui
from dashboard.auth import guard
from dashboard.state import clear_listings, ping_latency

actor = guard("endpoints")
st.title("Endpoints")
backend = ui.backend_or_stop()

TRANSIENT = ("Creating", "Updating", "Deleting")
endpoints = ui.fetch("list_endpoints", default=[]) or []
versions = ui.fetch("list_model_versions", default=[]) or []
numbers = [v["ModelPackageVersion"] for v in versions]
approved = [v["ModelPackageVersion"] for v in versions if v.get("ModelApprovalStatus") == "Approved"]

# ------------------------------------------------------------------------------------ deploy
with st.expander("Deploy a new endpoint", expanded=not endpoints, icon=":material/cloud_upload:"):
    if not versions:
        ui.empty_state("Nothing to deploy yet", "Register a model version on **Registry** first.")
    else:
        # outside the form, so that the suggested endpoint name follows the stage
        stage = st.radio("Stage", ["staging"] + (["prod"] if actor.can("deploy_prod") else []), horizontal=True,
                         key="ep_new_stage", help="prod needs an approved version and a manager")
        ui.name_follows_stage("ep_new_name", backend.project, stage)
        with st.form("ep_create", border=False):
            c1, c2 = st.columns(2)
            name = c1.text_input("Endpoint name", key="ep_new_name")
            version = c2.selectbox("Model version", numbers, key="ep_new_version",
                                   format_func=lambda n: f"v{n}" + (" (approved)" if n in approved else ""))
            create = st.form_submit_button("Deploy", type="primary")
        if create:
            with ui.attempt("deploy the endpoint"):
                record = backend.create_endpoint(actor, name.strip(), version, stage=stage)
                clear_listings()
                st.session_state["qcbr_ep_focus"] = record["EndpointName"]
                st.rerun()

if not endpoints:
    ui.empty_state("No endpoints yet", "Deploy a registered version above; it starts an inference server with "
                   "SageMaker's container contract that the **Predict** page (and the API) can query.")
    st.stop()

# ------------------------------------------------------------------------------------ table
rows = []
for e in endpoints:
    latency = ping_latency(e.get("EndpointUrl")) if e.get("EndpointStatus") == "InService" else None
    rows.append({
        "endpoint": e["EndpointName"], "status": e.get("EndpointStatus"), "stage": e.get("Stage"),
        "version": e.get("ModelPackageVersion"), "url": e.get("EndpointUrl"),
        "ping ms": None if latency is None else round(latency * 1000, 1), "updated": e.get("LastModifiedTime"),
        "by": e.get("CreatedBy"),
    })
st.dataframe(pd.DataFrame(rows), hide_index=True, key="ep_table",
             column_config={"url": st.column_config.LinkColumn("url")})

names = [e["EndpointName"] for e in endpoints]
focus = st.session_state.pop("qcbr_ep_focus", None)
if focus in names:
    st.session_state["ep_select"] = focus
selected = st.selectbox("Endpoint", names, key="ep_select")


def detail() -> None:
    try:
        ep = backend.describe_endpoint(selected)
    except Exception as exc:  # noqa: BLE001
        ui.show_error(exc, f"read endpoint {selected}")
        return
    status = ep.get("EndpointStatus")
    st.markdown(f"### {selected} {ui.badge(status)} · {ep.get('Stage')} · model v{ep.get('ModelPackageVersion')}")
    if ep.get("FailureReason"):
        st.error(f"Failure: {ep['FailureReason']}")
    if status in TRANSIENT:
        st.caption(f"{status}… this panel refreshes by itself.")
        st.session_state["qcbr_ep_was_busy"] = True
    elif st.session_state.pop("qcbr_ep_was_busy", False):
        clear_listings()
        st.rerun(scope="app")
    variants = ep.get("ProductionVariants") or []
    if variants:
        st.caption("Variants: " + ", ".join(f"{v.get('VariantName')} → v{v.get('ModelPackageVersion')}"
                                            for v in variants))


busy = next((e.get("EndpointStatus") for e in endpoints if e["EndpointName"] == selected), None) in TRANSIENT
st.fragment(detail, run_every=2.0 if busy else None)()
ep = next(e for e in endpoints if e["EndpointName"] == selected)

actions, test = st.tabs(["Manage", "Test with JSON"])
with actions:
    c1, c2 = st.columns(2)
    with c1.form("ep_update", border=True):
        st.markdown("**Update (blue/green)**")
        st.caption("Starts the new version next to the old one and switches traffic when it answers /ping.")
        target = st.selectbox("New model version", numbers, key="ep_update_version",
                              format_func=lambda n: f"v{n}" + (" (approved)" if n in approved else ""))
        update = st.form_submit_button("Update endpoint")
    if update:
        with ui.attempt("update the endpoint"):
            backend.update_endpoint(actor, selected, target)
            clear_listings()
            st.rerun()
    with c2.container(border=True):
        st.markdown("**Restart / delete**")
        if ep.get("EndpointStatus") == "Failed":
            if st.button("Restart failed endpoint", key="ep_restart", icon=":material/restart_alt:"):
                with ui.attempt("restart the endpoint"):
                    backend.restart_endpoint(actor, selected)
                    clear_listings()
                    st.rerun()
        else:
            st.caption("Restart is offered when an endpoint has failed.")
        confirm = st.checkbox(f"Yes, delete {selected}", key="ep_delete_confirm")
        if st.button("Delete endpoint", key="ep_delete", disabled=not confirm, icon=":material/delete:"):
            with ui.attempt("delete the endpoint"):
                backend.delete_endpoint(actor, selected)
                clear_listings()
                st.rerun()

with test:
    example = {"instances": [{}]}
    try:
        schema = (backend.describe_model_version(ep["ModelPackageVersion"]).get("FeatureSchema") or {})
        feats = schema.get("features", schema) if isinstance(schema, dict) else schema
        example = {"instances": [{f["name"]: (f.get("categories") or ["a"])[0] if f.get("type") == "categorical"
                                  else (False if f.get("type") == "boolean" else 0.0) for f in feats or []}]}
    except Exception:  # noqa: BLE001 - the example is a convenience
        pass
    body = st.text_area("Request body (application/json)", value=json.dumps(example, indent=2), height=200,
                        key="ep_test_body")
    if st.button("Send", key="ep_test_send", type="primary", disabled=ep.get("EndpointStatus") != "InService"):
        try:
            payload = json.loads(body)
        except json.JSONDecodeError as exc:
            st.error(f"The body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.")
        else:
            with ui.attempt("invoke the endpoint"):
                started = time.perf_counter()
                result = backend.invoke(actor, selected, payload)
                st.caption(f"Answered in {1000 * (time.perf_counter() - started):.0f} ms "
                           f"(inference id {result.get('inference_id')}).")
                st.json(result)
