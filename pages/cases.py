"""Cases: upload a case base, review its schema, fix what validation finds, profile it, check bias."""
import hashlib
import re

import pandas as pd
import streamlit as st

from dashboard import components as ui
from dashboard import profile
from dashboard.auth import guard
from dashboard.state import clear_listings, config

actor = guard("cases")
st.title("Cases")
backend = ui.backend_or_stop()

try:
    from qcbr.cases import FEATURE_TYPES, LABEL_HINTS, CaseBase, sanitize_name
except ModuleNotFoundError:
    ui.empty_state("Case handling is not installed", "This checkout has no `qcbr.cases` module yet.")
    st.stop()

IGNORE = "(drop column)"


@st.cache_resource(show_spinner="Reading the file…", max_entries=4)
def read_draft(digest: str, _data: bytes, filename: str):
    """The file's columns and inferred types, before the label is chosen (one parse per upload)."""
    return CaseBase.from_file(_data, name=sanitize_name(re.sub(r"\.[^.]+$", "", filename)), validate=False,
                              source_name=filename)


@st.cache_resource(show_spinner="Validating…", max_entries=4)
def build(digest: str, schema_key: str, _draft, _schema: dict):
    return _draft.with_schema(_schema)


@st.cache_resource(show_spinner="Loading the dataset…", max_entries=4)
def load_version(home: str, name: str, sha: str):
    return backend.load_dataset(name, sha)


@st.cache_resource(show_spinner="Profiling…", max_entries=8)
def version_profile(home: str, name: str, sha: str) -> dict:
    cb = load_version(home, name, sha)
    return profile.profile(cb.frame, cb.schema)


@st.cache_resource(show_spinner=False, max_entries=16)
def version_bias(home: str, name: str, sha: str, sensitive: str) -> tuple[dict, dict]:
    cb = load_version(home, name, sha)
    report = cb.bias_report(sensitive)
    return report, profile.group_rates(cb.frame, sensitive, cb.label)


upload_tab, datasets_tab = st.tabs(["Upload", "Datasets"])

# ------------------------------------------------------------------------------------------ upload
with upload_tab:
    uploaded = st.file_uploader(
        "Case file (CSV or Parquet)", type=["csv", "parquet", "pq", "tsv", "txt"], key="cases_file",
        help="One case per row: feature columns, a label (the solution) column, optionally an id column.",
    )
    if uploaded is None:
        ui.empty_state(
            "Upload a case base",
            "Choose a CSV or Parquet file with one case per row. You will pick the label column, check the "
            "inferred column types and see any problem with the rows that cause it before anything is stored.",
        )
    else:
        data = uploaded.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        draft = None
        with ui.attempt(f"read {uploaded.name}"):
            draft = read_draft(digest, data, uploaded.name)
        if draft is not None:
            columns = draft.columns
            inferred = {c["name"]: c["type"] for c in draft.schema["columns"]}
            guess = next((c for c in columns if c.strip().lower() in LABEL_HINTS), columns[-1])
            if st.session_state.get("qcbr_cases_digest") != digest:
                # another file: its choices start from what was inferred for it, not from the last file's.
                # Set, not popped: the browser only shows (and sends back) a keyed widget's new value
                # when the server pushes it through session state.
                st.session_state.update({
                    "cases_label": guess, "cases_id": draft.id_column if draft.id_column not in (None, guess)
                    else "(none)", "cases_sensitive": "(none)", "cases_missing": "impute", "cases_name": draft.name,
                    "qcbr_cases_types": {}, "qcbr_cases_digest": digest,
                })
            st.caption(f"{len(draft):,} rows · {len(columns)} columns · read from {uploaded.name}")

            st.subheader("Schema review")
            c1, c2, c3 = st.columns(3)
            label = c1.selectbox("Label column (the solution)", columns, key="cases_label")
            id_options = ["(none)"] + [c for c in columns if c != label]
            id_col = c2.selectbox("Id column", id_options, key="cases_id")
            sens_options = ["(none)"] + [c for c in columns if c not in (label, id_col)]
            sensitive = c3.selectbox("Sensitive column (for the bias report)", sens_options, key="cases_sensitive")

            feature_cols = [c for c in columns if c not in (label, id_col)]
            # the type choices are kept by column name: the editor's own state is by row position, and
            # picking another label or id column shifts the rows under it
            chosen = st.session_state.setdefault("qcbr_cases_types", {})
            default = {c: inferred[c] if inferred[c] in FEATURE_TYPES else "categorical" for c in feature_cols}
            types_frame = pd.DataFrame({"column": feature_cols, "type": [chosen.get(c, default[c]) for c in feature_cols]})
            rows_key = hashlib.sha256("\0".join([digest, *feature_cols]).encode()).hexdigest()[:16]
            edited = st.data_editor(
                types_frame, key=f"cases_types_{rows_key}", hide_index=True, disabled=["column"], num_rows="fixed",
                column_config={"type": st.column_config.SelectboxColumn(
                    "type", options=list(FEATURE_TYPES) + [IGNORE], required=True,
                    help="numeric: numbers; categorical: text categories; boolean: yes/no; drop: leave it out")},
            )
            for row in edited.to_dict("records"):
                if row["type"] == default[row["column"]]:
                    chosen.pop(row["column"], None)
                else:
                    chosen[row["column"]] = row["type"]
            c1, c2 = st.columns(2)
            missing = c1.radio("Missing values", ["impute", "reject"], horizontal=True, key="cases_missing",
                               help="impute: median / most frequent value; reject: refuse rows with gaps")
            name = c2.text_input("Dataset name", key="cases_name",
                                 help="letters, digits, '-' and '_'; a new upload under a used name is a new version")

            keep = [(r["column"], r["type"]) for r in edited.to_dict("records") if r["type"] != IGNORE]
            schema = {
                "label": label, "id_column": None if id_col == "(none)" else id_col, "missing_policy": missing,
                "columns": [{"name": c, "type": t} for c, t in keep] + [{"name": label, "type": "label"}]
                + ([{"name": id_col, "type": "id"}] if id_col != "(none)" else []),
            }
            schema_key = hashlib.sha256(repr(sorted(schema.items(), key=str)).encode()).hexdigest()
            case_base = None
            try:
                case_base = build(digest, schema_key, draft, schema)
            except Exception as exc:  # noqa: BLE001 - shown in place, next to the choices that caused it
                ui.show_error(exc, "accept these cases")
                st.caption("Change the label, the column types or the missing-value policy above, or fix the file "
                           "and upload it again.")
            if case_base is not None:
                summary = case_base.summary()
                st.dataframe(case_base.frame.head(10), hide_index=True, key="cases_preview")
                st.success(f"Valid: {summary['rows']:,} cases, {summary['features']} features, "
                           f"{summary['n_classes']} classes · sha256 {summary['sha256'][:12]}…")
                for warning in summary.get("warnings", []):
                    st.warning(warning)
                if summary.get("imputed"):
                    st.info("Imputed missing values: " + ", ".join(f"{c}: {n}" for c, n in summary["imputed"].items()))
                if st.button("Upload dataset", type="primary", key="cases_upload_btn", icon=":material/upload:"):
                    with ui.attempt("upload the dataset"):
                        record = backend.upload_dataset(actor, case_base, name)
                        clear_listings()
                        st.session_state["qcbr_cases_selected"] = record["DatasetName"]
                        if record.get("Created", True):
                            st.success(f"Stored {record['DatasetName']} version {record['Sha256'][:12]} "
                                       f"({record['Rows']:,} rows). Train on it in **Training**.")
                        else:
                            st.info(f"This exact content is already stored as {record['DatasetName']} version "
                                    f"{record['Sha256'][:12]}; nothing new was written.")
                if sensitive != "(none)":
                    with ui.attempt("build the bias report"):
                        report = case_base.bias_report(sensitive)
                        st.plotly_chart(ui.figure("group_rates", profile.group_rates(case_base.frame, sensitive, label),
                                                           f"Label rates by {sensitive}"), key="cases_upload_bias")
                        bad = report["sensitive"]["four_fifths_violations"]
                        if bad:
                            st.warning(f"Disparate impact below 0.8 (four-fifths rule) for: {', '.join(bad)}.")

# ---------------------------------------------------------------------------------------- datasets
with datasets_tab:
    records = ui.fetch("list_datasets", default=[]) or []
    if not records:
        ui.empty_state("No datasets yet", "Upload a case file in the **Upload** tab — or seed the demo.")
        ui.demo_panel(actor, key="cases_demo")
        st.stop()
    names = sorted({r["DatasetName"] for r in records})
    preferred = st.session_state.pop("qcbr_cases_selected", None)
    if preferred in names:  # just uploaded: show it (a keyed selectbox keeps its old choice otherwise)
        st.session_state["cases_dataset"] = preferred
        st.session_state["cases_version"] = 0  # its newest version
    chosen = st.selectbox("Dataset", names, key="cases_dataset")
    versions = [r for r in records if r["DatasetName"] == chosen]
    st.markdown("**Versions** (newest first)")
    st.dataframe(pd.DataFrame([{
        "sha256": v["Sha256"][:12], "rows": v.get("Rows"), "columns": len(v.get("Columns") or []),
        "label": v.get("Label"), "created": v.get("CreationTime"), "by": v.get("CreatedBy"),
    } for v in versions]), hide_index=True, key="cases_versions")
    labels = [f"{v['Sha256'][:12]} · {v.get('CreationTime', '')}" for v in versions]
    pick = st.selectbox("Version", range(len(versions)), format_func=lambda i: labels[i], key="cases_version")
    version = versions[pick]
    home = str(config().home)
    prof = None
    with ui.attempt("profile the dataset"):
        prof = version_profile(home, chosen, version["Sha256"])
    if prof is not None:
        ui.metric_row([("Cases", f"{prof['rows']:,}"), ("Columns", len(prof["columns"])),
                       ("Classes", len(prof["class_balance"])),
                       ("Columns with gaps", sum(v > 0 for v in prof["missing"].values()))])
        left, right = st.columns(2)
        left.plotly_chart(ui.figure("class_balance", prof["class_balance"]), key="cases_balance")
        right.plotly_chart(ui.figure("missing_values", prof["missing"]), key="cases_missing_fig")
        st.subheader("Distributions")
        by_name = {c["name"]: c for c in prof["columns"]}
        col = st.selectbox("Column", list(by_name), key="cases_dist_col")
        info = by_name[col]
        if "histogram" in info:
            st.plotly_chart(ui.figure("histogram", info["histogram"]["edges"], info["histogram"]["counts"], col),
                            key="cases_dist_fig")
            st.caption(f"min {info['min']:.4g} · mean {info['mean']:.4g} · max {info['max']:.4g} · "
                       f"std {info['std']:.4g} · {info['missing']:,} missing")
        elif "top" in info:
            st.plotly_chart(ui.figure("category_bars", info["top"], col), key="cases_dist_fig")
            st.caption(f"{info['unique']:,} distinct values" + (f" ({info['other']:,} cases in smaller ones)"
                                                                 if info.get("other") else ""))
        else:
            st.caption(f"{info['unique']:,} distinct values (an id column).")
        st.subheader("Bias report")
        schema_cols = [c["name"] for c in version["Schema"]["columns"] if c["type"] in FEATURE_TYPES]
        sensitive = st.selectbox("Sensitive column", ["(none)"] + schema_cols, key="cases_bias_col")
        if sensitive != "(none)":
            with ui.attempt("build the bias report"):
                report, rates = version_bias(home, chosen, version["Sha256"], sensitive)
                st.plotly_chart(ui.figure("group_rates", rates, f"Label rates by {sensitive}"), key="cases_bias_fig")
                impact = report["sensitive"]["disparate_impact"]
                st.dataframe(pd.DataFrame([{"class": k, **v} for k, v in impact.items()]), hide_index=True,
                             key="cases_impact")
                if report["sensitive"]["four_fifths_violations"]:
                    st.warning("Disparate impact below 0.8 (four-fifths rule) for: "
                               + ", ".join(report["sensitive"]["four_fifths_violations"]))
                else:
                    st.success("No class falls below the four-fifths rule across these groups.")
                if report["sensitive"]["small_groups"]:
                    st.caption("Groups with fewer than 30 cases (rates are noisy): "
                               + ", ".join(report["sensitive"]["small_groups"]))
        st.caption(f"Imbalance ratio (largest / smallest class): "
                   f"{max(prof['class_balance'].values()) / max(1, min(prof['class_balance'].values())):.2f}")
