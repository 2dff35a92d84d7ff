"""Monitoring: is each endpoint's model still fit for its traffic?

Verdict per endpoint (its latest monitoring execution); for one execution the per-feature drift
table with reference vs current distributions, novelty, decay from ground truth and the
violations; run the job now (a background task the page polls), its schedule, and the
automated-adjustment policy with its history and notifications. Data scientists and managers.
"""
from datetime import datetime, timedelta, timezone

import pandas as pd
import streamlit as st

from dashboard import components as ui
from dashboard import monitoring_data as data
from dashboard import monitoring_figures as mf
from dashboard.auth import guard
from dashboard.state import tasks
from qcbr.monitoring.policy import DEFAULT_POLICY

actor = guard("monitoring")
st.title("Monitoring")
backend = ui.backend_or_stop()

TASK = "qcbr_mon_task"
VERDICTS = {"Completed": "OK", "CompletedWithViolations": "Violations", "Failed": "Failed", None: "Not run yet"}
WINDOWS = {"Last hour": timedelta(hours=1), "Last 24 hours": timedelta(days=1), "Last 7 days": timedelta(days=7),
           "Everything captured": None}
PERIODS = {"Last 24 hours": 1, "Last 7 days": 7, "Last 30 days": 30, "Last 90 days": 90, "All time": None}


def when(iso) -> str:
    return "—" if not iso else str(iso)[:19].replace("T", " ") + " UTC"


def pct(v) -> str | None:
    return None if v is None or pd.isna(v) else f"{100 * float(v):.1f}%"


def run_job(backend, store, endpoint: str, since, apply: bool, actor, progress):
    """The background task: one execution, then (optionally) the adjustment policy on it."""
    from qcbr.monitoring.job import monitor_endpoint
    from qcbr.monitoring.policy import apply_policy

    record = monitor_endpoint(backend, store, endpoint, since, actor=actor, progress=progress)
    decision = None
    if apply and record["MonitoringExecutionStatus"] != "Failed":
        progress(1.0, "applying the adjustment policy")
        decision = apply_policy(backend, store, endpoint, record, actor=actor)
    return {"execution": record, "decision": decision}


endpoints = ui.fetch("list_endpoints", default=[]) or []
if not endpoints:
    ui.empty_state("Nothing to monitor yet", "Monitoring starts once an endpoint serves predictions: deploy one on "
                   "**Endpoints**. Every prediction is captured; a monitoring run compares the captured inputs with the "
                   "model's training baseline, and ground truth from users measures accuracy.")
    st.stop()
names = [e["EndpointName"] for e in endpoints]
by_name = {e["EndpointName"]: e for e in endpoints}

# a "Run now" that finished since the last run of this script: show its execution
job = st.session_state.get(TASK)
task = tasks().get(job["id"]) if job else None
if task is not None and task.done and not job.get("seen"):
    job["seen"] = True
    data.clear()
    if task.error is not None:
        st.session_state["qcbr_mon_task_error"] = task.error
    elif task.result:
        record = task.result["execution"]
        if record["EndpointName"] in names:
            st.session_state["mon_endpoint"] = record["EndpointName"]
            st.session_state["mon_execution"] = record["ExecutionId"]
        st.toast(f"Monitoring run of {record['EndpointName']}: {VERDICTS.get(record['MonitoringExecutionStatus'])}")

# ------------------------------------------------------------------------------ verdicts
st.subheader("Verdict per endpoint")
latest = data.latest_by_endpoint(tuple(names))
rows = []
for r in latest:
    s, e = r.get("Summary") or {}, by_name.get(r["EndpointName"], {})
    rows.append({"endpoint": r["EndpointName"], "verdict": VERDICTS.get(r.get("MonitoringExecutionStatus"), "?"),
                 "violations": r.get("ViolationsCount"), "when": when(r.get("ScheduledTime")),
                 "drift share": s.get("drift_share"), "novel share": s.get("novel_share"), "accuracy": s.get("accuracy"),
                 "rows": s.get("n_rows"), "stage": e.get("Stage"), "serving version": e.get("ModelPackageVersion"),
                 "endpoint status": e.get("EndpointStatus") or "deleted", "failure": r.get("FailureReason")})
st.dataframe(pd.DataFrame(rows), hide_index=True, key="mon_verdicts", column_config={
    "drift share": st.column_config.NumberColumn(format="percent"),
    "novel share": st.column_config.NumberColumn(format="percent"),
    "accuracy": st.column_config.NumberColumn(format="percent")})

default = st.session_state.get("mon_endpoint")
if default not in names:
    st.session_state["mon_endpoint"] = names[0]
c1, c2 = st.columns([2, 1])
endpoint = c1.selectbox("Endpoint", names, key="mon_endpoint")
period = c2.selectbox("Traffic period", list(PERIODS), index=2, key="mon_period")
days = PERIODS[period]

# ------------------------------------------------------------------------------- traffic
with ui.attempt(f"read the captured traffic of {endpoint}"):
    seen = data.traffic(endpoint, days)
    summary = seen["summary"]
    ui.metric_row([
        ("Endpoints in service", sum(e.get("EndpointStatus") == "InService" for e in endpoints)),
        ("Predictions (recent)", f"{summary['predictions']:,}"),
        ("Flagged", f"{summary['flagged']:,}"),
        ("Ground truth", f"{summary['labelled']:,}"),
        ("Accuracy on labelled", pct(summary["accuracy"])),
    ])
    if summary["predictions"]:
        st.plotly_chart(mf.traffic_over_time(seen["daily"]), key="mon_traffic")
    else:
        st.caption(f"No captured predictions for {endpoint} in this period: make some on **Predict** (every "
                   "prediction is captured), or pick a longer period.")

# ------------------------------------------------------------------------------- run now
store = data.store()
with st.container(border=True):
    st.markdown(f"**Run the monitoring job on {endpoint} now**")
    c1, c2, c3 = st.columns([2, 2, 1])
    window = c1.selectbox("Window of captured traffic", list(WINDOWS), index=1, key="mon_run_window")
    apply = c2.toggle("Then apply the adjustment policy", key="mon_run_apply",
                      help="If the policy fires, a retrain on the retained cases starts and the new version awaits "
                           "approval in the Registry. Nothing is ever deployed automatically.")
    running = task is not None and not task.done
    if c3.button("Run now", key="mon_run", type="primary", icon=":material/play_arrow:", disabled=running):
        span = WINDOWS[window]
        since = datetime.now(timezone.utc) - span if span else None
        task_id = tasks().submit(f"monitor {endpoint}", actor.name, run_job, backend, store, endpoint, since, apply, actor)
        st.session_state[TASK] = {"id": task_id, "endpoint": endpoint}
        st.rerun()

    @st.fragment(run_every=1.0 if running else None)
    def run_status() -> None:
        job = st.session_state.get(TASK)
        current = tasks().get(job["id"]) if job else None
        if current is None:
            return
        if not current.done:
            st.progress(current.fraction, text=f"{job['endpoint']}: {current.message}")
        elif not job.get("seen"):
            st.rerun(scope="app")  # the whole page shows the new execution
        elif current.error is not None:
            ui.show_error(current.error, f"run the monitoring job on {job['endpoint']}")
        elif current.result:
            record, decision = current.result["execution"], current.result["decision"]
            text = (f"Last run: {record['EndpointName']} {VERDICTS.get(record['MonitoringExecutionStatus'])} — "
                    f"{record['ViolationsCount']} violation(s) in {(record.get('Summary') or {}).get('n_rows') or 0} rows")
            (st.error if record["MonitoringExecutionStatus"] == "Failed" else st.success)(
                text + (f". {record['FailureReason']}" if record.get("FailureReason") else "."))
            if decision is not None:
                action = (decision.get("action") or {}).get("status")
                st.info(f"Adjustment policy {'fired' if decision['fire'] else 'did not fire'}"
                        + (f" → {action}" if action else "") + ": " + "; ".join(decision["reasons"]))

    run_status()

# ---------------------------------------------------------------------------- executions
records = data.executions(endpoint)
if not records:
    ui.empty_state(f"No monitoring runs for {endpoint} yet",
                   "Click **Run now** above to compare its captured traffic with the model's training baseline, or "
                   "give it a schedule below. A run needs captured predictions in its window.")
else:
    ids = [r["ExecutionId"] for r in records]
    labels = {r["ExecutionId"]: f"{when(r.get('ScheduledTime'))} · {VERDICTS.get(r['MonitoringExecutionStatus'])}"
              f" · {r.get('ViolationsCount')} violations" for r in records}
    if st.session_state.get("mon_execution") not in ids:
        st.session_state["mon_execution"] = ids[0]
    chosen = st.selectbox("Execution", ids, format_func=labels.get, key="mon_execution")
    details = data.execution_details(endpoint, chosen)
    record, report = details["execution"], details["report"]
    s = record.get("Summary") or {}
    window_text = f"{when((record.get('Window') or {}).get('Since')) if (record.get('Window') or {}).get('Since') else 'all captured traffic'}"
    st.caption(f"Model version {record.get('ModelPackageVersion') or '—'} · window from {window_text} · "
               f"{s.get('n_rows') or 0} rows · by {record.get('CreatedBy')} ({record.get('MonitoringScheduleName')})")
    if record["MonitoringExecutionStatus"] == "Failed":
        st.error(f"This run failed: {record.get('FailureReason')}", icon=":material/error:")
    ui.metric_row([
        ("Verdict", VERDICTS.get(record["MonitoringExecutionStatus"])),
        ("Violations", record.get("ViolationsCount")),
        ("Drifted features", f"{len(s.get('drifted_features') or [])}" if s.get("drift_share") is not None else None),
        ("Novel queries", pct(s.get("novel_share"))),
        ("Accuracy (ground truth)", pct(s.get("accuracy"))),
    ])

    tab_features, tab_novelty, tab_decay, tab_violations, tab_history = st.tabs(
        ["Drift per feature", "Novelty & class mix", "Decay", "Violations", "Over time"])
    with tab_features:
        drift = report.get("drift")
        if not drift:
            st.info("No drift analysis in this execution (it failed before comparing anything).")
        else:
            from qcbr.monitoring.drift import features_frame

            table = features_frame(drift)
            shown = table[["feature", "type", "verdict", "drifted", "statistic", "value", "threshold", "psi",
                           "wasserstein_normalised", "js_distance", "completeness", "violations"]]
            event = st.dataframe(shown, hide_index=True, key="mon_features", on_select="rerun",
                                 selection_mode="single-row")
            picked = list(getattr(getattr(event, "selection", None), "rows", []) or [])
            if picked and picked != st.session_state.get("qcbr_mon_picked"):
                st.session_state["mon_feature"] = shown.iloc[picked[0]]["feature"]
            st.session_state["qcbr_mon_picked"] = picked
            features = list(shown["feature"])
            if st.session_state.get("mon_feature") not in features:
                drifted = [f for f in drift.get("drifted_features", []) if f in features]
                st.session_state["mon_feature"] = (drifted or features)[0]
            st.caption(f"Drifted = significant (p < {drift['thresholds'].get('alpha_per_feature', 0):.2g}, Bonferroni) "
                       "and large enough (PSI, normalised Wasserstein or Jensen-Shannon at or above its threshold). "
                       "Select a row, or a feature below, to compare its distributions.")
            feature = st.selectbox("Feature", features, key="mon_feature")
            entry = next(f for f in drift["features"] if f["name"] == feature)
            st.plotly_chart(mf.feature_distribution(entry.get("distribution"), feature), key="mon_feature_fig")
            if entry.get("note"):
                st.caption(f"Note: {entry['note']}")
    with tab_novelty:
        st.plotly_chart(mf.novelty_distribution(report.get("novelty")), key="mon_novelty_fig")
        st.caption("A query is novel when its best similarity to the case memory is below what 95% of the remembered "
                   "cases have to their nearest neighbour: new cases unlike anything the model can reason from.")
        st.plotly_chart(mf.class_mix(report.get("prediction_drift")), key="mon_classmix_fig")
    with tab_decay:
        decay = report.get("decay") or {}
        if record["MonitoringExecutionStatus"] == "Failed":
            st.info("This run failed before reading any ground truth; see the reason above.")
        elif not decay.get("evaluated"):
            ui.empty_state("No ground truth in this window yet",
                           "Accuracy, recall per class and calibration appear once the true outcomes of predictions "
                           "arrive: users give them on **Predict** / **My predictions**, or with `qcbr ground-truth`. "
                           "Then run the job again.")
        else:
            from qcbr.monitoring.decay import windows_frame

            overall = decay.get("overall") or {}
            ui.metric_row([
                ("Labelled predictions", overall.get("n_labelled")),
                ("Accuracy", pct(overall.get("accuracy"))),
                ("Validation accuracy", pct(decay.get("reference_accuracy"))),
                ("Drop", pct(decay.get("accuracy_drop"))),
                ("Calibration error (ECE)", None if overall.get("ece") is None else f"{overall['ece']:.3f}"),
            ])
            if not decay.get("enough_labels"):
                st.caption(f"Only {overall.get('n_labelled')} labels: decay is called from "
                           f"{decay['thresholds']['min_labelled']} on.")
            st.plotly_chart(mf.decay_over_time(windows_frame(decay), decay.get("reference_accuracy")),
                            key="mon_decay_fig")
            recall = pd.DataFrame({"class": list((overall.get("recall") or {}).keys()),
                                   "recall": list((overall.get("recall") or {}).values())})
            st.dataframe(recall, hide_index=True, key="mon_recall",
                         column_config={"recall": st.column_config.NumberColumn(format="percent")})
    with tab_violations:
        if details["violations"]:
            st.dataframe(pd.DataFrame(details["violations"]), hide_index=True, key="mon_violations")
        elif record["MonitoringExecutionStatus"] == "Failed":
            st.caption("A failed run checks nothing; see the reason above.")
        else:
            st.success("No constraint violations in this execution.")
    with tab_history:
        from qcbr.monitoring.job import executions_frame

        frame = executions_frame(records)
        st.plotly_chart(mf.executions_over_time(frame), key="mon_history_fig")
        listed = frame.drop(columns=["endpoint"]).iloc[::-1].reset_index(drop=True)
        listed["time"] = listed["time"].dt.strftime("%Y-%m-%d %H:%M:%S UTC")  # text: Arrow drops the zone
        ui.paged_table(listed, key="mon_history", page_size=20)

# ------------------------------------------------------------------------------ schedule
st.subheader("Schedule")
if backend.name != "local":
    # the endpoint stacks' EventBridge rules are this backend's scheduler (qcbr.lifecycle.aws.monitoring_rules)
    with ui.attempt("read the monitoring schedule's rules"):
        rules = backend.monitoring_scheduler_status().get("rules") or []
        listed = ", ".join(f"{r['Name']} {r['State']} ({r['ScheduleExpression']})" for r in rules) or "none yet"
        st.info(f"On the {backend.name} backend the endpoint stacks' EventBridge rules run the same monitoring job "
                f"(see infra/); results appear here like on-demand runs. Rules: {listed}.")
else:
    status = backend.monitoring_scheduler_status()
    schedules, state = data.schedules()
    mine, last = schedules.get(endpoint), state.get(endpoint) or {}
    c1, c2 = st.columns(2)
    with c1:
        if status["running"]:
            st.markdown(f"Scheduler :green-badge[running] pid {status['pid']}, wakes every "
                        f"{status.get('every_minutes'):g} min (since {when(status.get('started'))})")
        else:
            st.markdown("Scheduler :gray-badge[stopped] — schedules run only while it runs.")
        wake = st.number_input("Wake every (minutes)", min_value=0.1, max_value=1440.0,
                               value=float(status.get("every_minutes") or 5.0), step=1.0, key="mon_sched_wake")
        b1, b2 = st.columns(2)
        if b1.button("Restart scheduler" if status["running"] else "Start scheduler", key="mon_sched_start",
                     icon=":material/schedule:"):
            with ui.attempt("start the monitoring scheduler"):
                if status["running"]:
                    backend.stop_monitoring_scheduler(actor)
                backend.start_monitoring_scheduler(actor, wake)
                st.rerun()
        if b2.button("Stop scheduler", key="mon_sched_stop", disabled=not status["running"], icon=":material/stop:"):
            with ui.attempt("stop the monitoring scheduler"):
                backend.stop_monitoring_scheduler(actor)
                st.rerun()
    with c2:
        with st.form(f"mon_schedule_form_{endpoint}", border=False):
            every = st.number_input(f"Monitor {endpoint} every (minutes)", min_value=1.0, max_value=10080.0,
                                    value=float((mine or {}).get("every_minutes") or 60.0), step=5.0, key=f"mon_sched_every_{endpoint}")
            windowed = st.checkbox("Only the last minutes below (else everything since the previous run)",
                                   value=(mine or {}).get("window_minutes") is not None,
                                   key=f"mon_sched_windowed_{endpoint}")
            span = st.number_input("Window (minutes)", min_value=1.0,
                                   value=float((mine or {}).get("window_minutes") or 60.0), step=60.0,
                                   key=f"mon_sched_window_{endpoint}")
            enabled = st.toggle("Enabled", value=bool((mine or {}).get("enabled", True)), key=f"mon_sched_enabled_{endpoint}")
            saved = st.form_submit_button("Save schedule", icon=":material/save:")
        if saved:
            from qcbr.monitoring.scheduler import set_schedule

            with ui.attempt("save the schedule"):
                set_schedule(actor, data.home(), endpoint, every, span if windowed else None, enabled)
                data.clear("schedules")
                st.rerun()
        if mine:
            st.caption(f"{endpoint}: every {mine['every_minutes']:g} min, "
                       f"{'enabled' if mine.get('enabled', True) else 'paused'} (by {mine.get('updated_by')}); last run "
                       f"{when(last.get('last_run'))} {last.get('last_status') or ''} {last.get('last_error') or ''}")
        else:
            st.caption(f"{endpoint} has no schedule yet.")

# ------------------------------------------------------------------- automated adjustment
st.subheader("Automated adjustment")
st.caption("When a run's drift share, novel share or accuracy drop reaches its threshold, the policy retrains on the "
           "retained cases (past cases plus revised ones) and registers the new version for approval. It never deploys.")
policy = data.policy(endpoint)
with st.form(f"mon_policy_form_{endpoint}"):
    enabled = st.toggle("Policy enabled", value=bool(policy["enabled"]), key=f"mon_pol_enabled_{endpoint}")
    thresholds = {}
    for col, (name, label, step) in zip(st.columns(3), (
            ("max_drift_share", "drift share", 0.05), ("max_novel_share", "novel share", 0.05),
            ("max_accuracy_drop", "accuracy drop", 0.01))):
        on = col.checkbox(f"Check the {label}", value=policy[name] is not None, key=f"mon_pol_{name}_on_{endpoint}")
        value = col.number_input(f"Fire at {label} ≥", 0.0, 1.0, float(DEFAULT_POLICY[name] if policy[name] is None
                                                                      else policy[name]), step,
                                 key=f"mon_pol_{name}_{endpoint}")
        thresholds[name] = float(value) if on else None
    c1, c2, c3 = st.columns(3)
    min_rows = c1.number_input("Minimum captured rows", 1, 10_000_000, int(policy["min_rows"]), key=f"mon_pol_rows_{endpoint}")
    min_labelled = c2.number_input("Minimum labelled rows", 1, 10_000_000, int(policy["min_labelled"]),
                                   key=f"mon_pol_labelled_{endpoint}")
    cooldown = c3.number_input("Cooldown between retrains (hours)", 0.0, 10_000.0, float(policy["cooldown_hours"]),
                               1.0, key=f"mon_pol_cooldown_{endpoint}")
    save_policy = st.form_submit_button("Save policy", icon=":material/save:")
if save_policy:
    from qcbr.monitoring.policy import set_policy

    wanted = {"enabled": enabled, **thresholds,
              "min_rows": int(min_rows), "min_labelled": int(min_labelled), "cooldown_hours": float(cooldown)}
    changes = {k: v for k, v in wanted.items() if policy.get(k) != v}
    with ui.attempt("save the policy"):
        set_policy(actor, store, endpoint, changes)
        data.clear("policy")
        st.toast("Policy saved" if changes else "Nothing changed", icon=":material/save:")
        st.rerun()
st.caption(f"{'Configured' if policy.get('configured') else 'Defaults (never edited)'}"
           + (f" · last edit by {policy.get('updated_by')} at {when(policy.get('updated_at'))}" if policy.get("updated_by") else ""))
if records:
    from qcbr.monitoring.policy import evaluate_policy

    verdict = evaluate_policy(policy, records[0])
    (st.warning if verdict["fire"] else st.caption)(
        f"On the latest execution the policy {'would fire' if verdict['fire'] else 'stays quiet'}: "
        + "; ".join(verdict["reasons"]))

def history_details(event: dict) -> str:
    if event.get("kind") == "edit":
        return ", ".join(f"{k}: {v.get('old')} → {v.get('new')}" for k, v in (event.get("changes") or {}).items())
    action = event.get("action") or {}
    done = [f"retrain {action['TrainingJobName']}"] if action.get("TrainingJobName") else []
    done += [f"version {action['ModelPackageVersion']} awaits approval"] if action.get("ModelPackageVersion") else []
    done += [str(action.get("FailureReason") or action.get("reason"))] if action.get("FailureReason") or action.get("reason") else []
    return "; ".join(list(event.get("reasons") or []) + done)


history = data.policy_history(endpoint)
notes = data.notifications(endpoint)
st.markdown("**Policy history** (edits and decisions, newest first)")
if not history:
    st.caption("No edits or decisions yet: decisions are made on scheduled runs, or on a run now with "
               "“apply the adjustment policy”.")
else:
    st.dataframe(pd.DataFrame([{
        "time": when(e.get("time")), "kind": e.get("kind"),
        "by": e.get("by") or ("policy" if e.get("kind") != "edit" else None),
        "fired": e.get("fire"), "action": (e.get("action") or {}).get("status") or "—",
        "details": history_details(e),
    } for e in history]), hide_index=True, key="mon_policy_history",
        column_config={"details": st.column_config.TextColumn(width="large")})
st.markdown("**Notifications**")
if not notes:
    st.caption("None yet: automated retrains and versions awaiting approval are announced here.")
else:
    st.dataframe(pd.DataFrame([{"time": when(n.get("time")), "level": n.get("level"), "message": n.get("message")}
                               for n in notes]), hide_index=True, key="mon_notifications",
                 column_config={"message": st.column_config.TextColumn(width="large")})
