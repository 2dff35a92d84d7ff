"""The model card: one Markdown page of risk documentation per model version.

A pure function of plain dicts (the version record, metrics.json, the dataset record, the bias
report, the monitoring thresholds, the approval history), so the Registry screen, the
Markdown export and the training entrypoint all render the same card. Known risks are derived
from the numbers (kernel concentration, class imbalance, weak classes, a small or optimistic
validation), not written by hand, so they cannot be forgotten.
"""
from __future__ import annotations

import json
from typing import Any

IMBALANCE_RATIO = 3.0  # majority / minority cases above this is called imbalance
WEAK_RECALL = 0.6
SMALL_VALIDATION = 30
CV_GAP = 0.1

DEFAULT_INTENDED_USE = (
    "Classify new cases by analogy with labelled past cases (quantum case-based reasoning): each prediction "
    "comes with its most similar stored cases as the explanation. Meant to support an analyst's decision; "
    "predictions flagged below the confidence threshold need review before acting on them."
)


def _get(d: dict | None, *keys: str, default=None):
    for k in keys:
        if d and d.get(k) is not None:
            return d[k]
    return default


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _table(rows: list[tuple[str, Any]]) -> list[str]:
    out = ["| | |", "|---|---|"]
    out += [f"| {k} | {_fmt(v).replace('|', '/')} |" for k, v in rows]
    return out


def _model_facts(model: Any) -> dict:
    """What a fitted QCBRClassifier can tell the card (only when the trainer passes one)."""
    if model is None:
        return {}
    facts = {}
    for attr, key in (("feature_map", "feature_map"), ("alpha_", "alpha"), ("k_", "k"), ("reuse", "reuse"),
                      ("similarity", "similarity"), ("epsilon", "epsilon"), ("reps", "reps"), ("shots", "shots"),
                      ("noise", "noise")):
        value = getattr(model, attr, None)
        if value is not None and not callable(value):
            facts[key] = value
    fm = getattr(model, "feature_map_", None)
    if fm is not None and getattr(fm, "n_qubits", None):
        facts["n_qubits"] = fm.n_qubits
    elif getattr(model, "n_qubits", None):
        facts["n_qubits"] = model.n_qubits
    if isinstance(getattr(model, "kernel_diagnostics_", None), dict):
        facts["diagnostics"] = model.kernel_diagnostics_
    classes = getattr(model, "classes_", None)
    if classes is not None:
        facts["classes"] = [str(c) for c in classes]
        codes = getattr(model, "y_memory_", None)  # class codes of the stored cases
        if codes is not None:
            import numpy as np

            counts = np.bincount(np.asarray(codes, dtype=int), minlength=len(classes))
            facts["class_counts"] = {str(c): int(n) for c, n in zip(classes, counts)}
    return facts


def known_risks(metrics: dict | None, class_counts: dict | None, diagnostics: dict | None,
                hyperparameters: dict | None = None, status: str | None = None) -> list[str]:
    """Risks and limits that follow from the numbers; always ends with the method's inherent limits."""
    metrics = metrics or {}
    risks = []
    if diagnostics:
        if diagnostics.get("concentrated"):
            risks.append("**Kernel concentration**: the similarities between cases are nearly all alike "
                         f"(mean off-diagonal fidelity {_fmt(diagnostics.get('mean_offdiag'))}, effective rank "
                         f"{_fmt(diagnostics.get('effective_rank'))}), so retrieval barely tells cases apart. "
                         + (diagnostics.get("hint") or "Lower the bandwidth alpha or use fewer qubits."))
        else:
            risks.append(f"Kernel concentration checked: not concentrated (mean off-diagonal fidelity "
                         f"{_fmt(diagnostics.get('mean_offdiag'))}, effective rank {_fmt(diagnostics.get('effective_rank'))}).")
    else:
        risks.append("Kernel concentration was not reported for this version; check the similarity diagnostics.")
    if class_counts:
        counts = {k: v for k, v in class_counts.items() if v}
        if counts:
            hi_k = max(counts, key=counts.get)
            lo_k = min(counts, key=counts.get)
            ratio = counts[hi_k] / counts[lo_k]
            if ratio > IMBALANCE_RATIO:
                risks.append(f"**Class imbalance**: {counts[hi_k]} cases of {hi_k!r} against {counts[lo_k]} of {lo_k!r} "
                             f"(ratio {ratio:.1f}); the vote favours the majority class, so watch the recall of {lo_k!r}.")
    recall = metrics.get("validation:recall") or {}
    weak = {c: r for c, r in recall.items() if isinstance(r, (int, float)) and r < WEAK_RECALL}
    if weak:
        risks.append("**Weak classes**: validation recall " + ", ".join(f"{c} {r:.2f}" for c, r in sorted(weak.items()))
                     + f" (below {WEAK_RECALL}); cases of these classes are often missed.")
    n_val = metrics.get("validation:n")
    if isinstance(n_val, int) and n_val < SMALL_VALIDATION:
        risks.append(f"**Small validation set**: {n_val} held-out cases; the accuracy estimate is uncertain by several points.")
    if n_val is None and "validation:accuracy" not in metrics:
        risks.append("**No held-out validation**: accuracy was not measured on unseen cases.")
    val, cv = metrics.get("validation:accuracy"), metrics.get("cv:accuracy")
    if isinstance(val, (int, float)) and isinstance(cv, (int, float)) and abs(val - cv) > CV_GAP:
        risks.append(f"**Unstable accuracy**: validation {val:.3f} vs cross-validated {cv:.3f}; the estimate depends on the split.")
    hps = hyperparameters or {}
    if str(hps.get("similarity", "")).lower() == "sampled":
        risks.append(f"**Sampled similarity**: fidelities are estimated from {hps.get('shots', '?')} shots"
                     + (f" with noise {hps.get('noise')}" if hps.get("noise") not in (None, "", "None") else "")
                     + "; predictions near a tie can change between runs.")
    if status and status != "Approved":
        risks.append(f"**Not approved**: this version is {status}; it must not serve production traffic until a manager approves it.")
    risks.append("A case-based model knows only what its case memory holds: queries unlike any stored case (novelty) "
                 "get low similarities and unreliable answers; monitoring tracks this.")
    risks.append("Ground truth arrives late and only for some predictions, so production accuracy lags and may be biased "
                 "towards the cases analysts review.")
    return risks


def render_model_card(
    version: dict | None = None,
    metrics: dict | None = None,
    dataset: dict | None = None,
    bias_report: dict | None = None,
    thresholds: dict | None = None,
    policy: dict | None = None,
    diagnostics: dict | None = None,
    intended_use: str | None = None,
    approvals: list[dict] | None = None,
    job_name: str | None = None,
    hyperparameters: dict | None = None,
    model: Any = None,
    project: str | None = None,
) -> str:
    """The model card as Markdown. Every argument is optional; what is missing reads 'n/a'.

    ``version``: the ``describe_model_version`` record (its ModelMetrics, HyperParameters,
    Lineage, ApprovalHistory fill in what the other arguments leave out). ``dataset``: the
    ``describe_dataset`` record or ``CaseBase.summary()``. ``thresholds``: the monitoring
    thresholds (``drift.Thresholds().to_dict()``); ``policy``: the endpoint's adjustment policy.
    ``model``: a fitted classifier (the training entrypoint passes it), for facts the dicts lack.
    """
    version = version or {}
    facts = _model_facts(model)
    metrics = dict(metrics or {})
    for k, v in (version.get("ModelMetrics") or {}).items():
        metrics.setdefault(k, v)
    hps = dict(hyperparameters or version.get("HyperParameters") or {})
    lineage = version.get("Lineage") or {}
    diagnostics = diagnostics or facts.get("diagnostics") or metrics.get("kernel_diagnostics")
    number = version.get("ModelPackageVersion")
    status = version.get("ModelApprovalStatus")
    group = project or version.get("ModelPackageGroupName")
    title = f"Model card: {group or 'qCBR'} version {number}" if number is not None else f"Model card: {job_name or group or 'qCBR model'}"

    dataset = dataset or {}
    ds_name = _get(dataset, "DatasetName", "name", default=lineage.get("DatasetName"))
    ds_sha = _get(dataset, "Sha256", "sha256", default=lineage.get("DatasetSha256"))
    class_counts = _get(bias_report, "class_counts") or _get(dataset, "classes") or facts.get("class_counts")
    if not isinstance(class_counts, dict):
        class_counts = None
    labels = metrics.get("labels") or facts.get("classes") or (list(class_counts) if class_counts else [])

    lines = [f"# {title}", ""]
    if status:
        lines += [f"**Approval status: {status}**", ""]
    lines += ["## Intended use", "", intended_use or DEFAULT_INTENDED_USE, ""]
    lines += ["Out of scope: fully automated decisions without review of flagged predictions; populations unlike the "
              "training cases (see novelty monitoring).", ""]

    lines += ["## Data", ""]
    lines += _table([
        ("dataset", ds_name), ("version (sha256)", ds_sha), ("rows", _get(dataset, "Rows", "rows")),
        ("label", _get(dataset, "Label", "label", default=_get(bias_report, "label"))),
        ("classes", ", ".join(f"{k} ({v})" for k, v in class_counts.items()) if class_counts else ", ".join(map(str, labels)) or None),
        ("training job", lineage.get("TrainingJobName") or job_name),
    ])
    lines.append("")
    if bias_report:
        lines += ["### Bias report", ""]
        lines.append(f"- imbalance ratio (majority / minority): {_fmt(bias_report.get('imbalance_ratio'))} "
                     f"({bias_report.get('majority_class')} / {bias_report.get('minority_class')})")
        sensitive = bias_report.get("sensitive")
        if sensitive:
            name = sensitive.get("column") if isinstance(sensitive, dict) else sensitive
            lines.append(f"- sensitive attribute: {name}")
            impact = bias_report.get("disparate_impact") or (sensitive.get("disparate_impact") if isinstance(sensitive, dict) else None)
            if isinstance(impact, dict):
                for cls, info in impact.items():
                    ratio = info.get("ratio") if isinstance(info, dict) else info
                    flag = " (below the four-fifths rule)" if isinstance(ratio, (int, float)) and ratio < 0.8 else ""
                    lines.append(f"  - disparate impact for {cls}: {_fmt(ratio)}{flag}")
        else:
            lines.append("- no sensitive attribute was analysed; run a bias report with one before production use")
        lines.append("")

    lines += ["## Method and parameters", "",
              "Quantum case-based reasoning: cases are scaled to angles, encoded as quantum states by a feature map; "
              "similarity is the state fidelity |<psi_q|psi_s>|^2; the k most similar cases vote, weighted by similarity "
              "(retrieve, reuse); low-confidence predictions are flagged for revision and revised cases are retained "
              "by retraining.", ""]
    params = [("feature map", hps.get("feature_map", facts.get("feature_map"))),
              ("qubits", hps.get("n_qubits", facts.get("n_qubits"))),
              ("bandwidth alpha (chosen)", metrics.get("alpha", facts.get("alpha"))),
              ("k (chosen)", metrics.get("k", facts.get("k"))),
              ("reuse", hps.get("reuse", facts.get("reuse"))),
              ("similarity", hps.get("similarity", facts.get("similarity"))),
              ("confidence threshold epsilon", hps.get("epsilon", facts.get("epsilon")))]
    lines += _table(params)
    if hps:
        lines += ["", f"Hyperparameters as submitted: `{json.dumps(hps, sort_keys=True)}`"]
    lines.append("")

    lines += ["## Metrics", ""]
    rows = [("validation accuracy", metrics.get("validation:accuracy")), ("cross-validated accuracy", metrics.get("cv:accuracy")),
            ("validation cases", metrics.get("validation:n")), ("training cases", metrics.get("train:n", metrics.get("n")))]
    rows += [(f"recall of {c}", r) for c, r in sorted((metrics.get("validation:recall") or {}).items())]
    lines += _table(rows)
    matrix = metrics.get("validation:confusion_matrix")
    if matrix and labels and len(matrix) == len(labels):
        lines += ["", "Validation confusion matrix (rows: truth, columns: predicted):", "",
                  "| truth \\ predicted | " + " | ".join(map(str, labels)) + " |",
                  "|---|" + "---|" * len(labels)]
        lines += [f"| {labels[i]} | " + " | ".join(str(int(v)) for v in row) + " |" for i, row in enumerate(matrix)]
    lines.append("")

    lines += ["## Monitoring thresholds", ""]
    if thresholds or policy:
        t = thresholds or {}
        lines += _table([
            ("drift significance (family-wise alpha)", t.get("alpha")), ("PSI", t.get("psi")),
            ("normalised Wasserstein", t.get("wasserstein") if t.get("wasserstein") is not None else "comparison_threshold (0.1)"),
            ("Jensen-Shannon", t.get("js") if t.get("js") is not None else "comparison_threshold (0.1)"),
            ("novel share alarm", t.get("novelty_share")), ("accuracy drop alarm", t.get("accuracy_drop")),
        ] + ([("retrain when drift share >=", policy.get("max_drift_share")),
              ("retrain when novel share >=", policy.get("max_novel_share")),
              ("retrain when accuracy drop >=", policy.get("max_accuracy_drop")),
              ("automated retraining", "enabled" if policy.get("enabled") else "disabled")] if policy else []))
    else:
        lines.append("The defaults of `qcbr monitor` apply (family-wise alpha 0.01 with PSI or Wasserstein >= 0.1 / "
                     "Jensen-Shannon >= 0.1; novelty and decay alarms as configured per endpoint).")
    lines.append("")

    lines += ["## Known risks and limits", ""]
    lines += [f"- {r}" for r in known_risks(metrics, class_counts, diagnostics, hps, status)]
    lines.append("")

    history = approvals if approvals is not None else version.get("ApprovalHistory") or []
    lines += ["## Approvals", ""]
    if history:
        lines += ["| status | by | time | comment |", "|---|---|---|---|"]
        lines += [f"| {h.get('Status')} | {h.get('By')} | {h.get('Time')} | {str(h.get('Comment') or '').replace('|', '/')} |"
                  for h in history]
    else:
        lines.append("Not registered yet: no approval decisions.")
    lines.append("")
    return "\n".join(lines)
