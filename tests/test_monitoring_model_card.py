"""The model card: a pure Markdown rendering of a version's records, with derived risks."""
from __future__ import annotations

from qcbr.monitoring.drift import Thresholds
from qcbr.monitoring.model_card import known_risks, render_model_card
from qcbr.monitoring.policy import DEFAULT_POLICY

VERSION = {
    "ModelPackageGroupName": "churn", "ModelPackageVersion": 4, "ModelApprovalStatus": "Approved",
    "HyperParameters": {"feature_map": "zz", "k": "auto", "similarity": "sampled", "shots": "512", "noise": "0.01"},
    "ModelMetrics": {"validation:accuracy": 0.81},
    "Lineage": {"DatasetName": "churn-cases", "DatasetSha256": "ab" * 32, "TrainingJobName": "churn-job-7"},
    "ApprovalHistory": [
        {"Status": "PendingManualApproval", "By": "dan", "Comment": "registered", "Time": "2026-03-01T10:00:00Z"},
        {"Status": "Approved", "By": "maria", "Comment": "ok | ship", "Time": "2026-03-02T09:00:00Z"},
    ],
}
METRICS = {"labels": ["churn", "stay"], "validation:confusion_matrix": [[8, 12], [3, 77]], "validation:n": 20,
           "validation:recall": {"churn": 0.4, "stay": 0.96}, "cv:accuracy": 0.95, "alpha": 0.35, "k": 7}
BIAS = {"label": "churned", "rows": 500, "class_counts": {"churn": 100, "stay": 400}, "imbalance_ratio": 4.0,
        "majority_class": "stay", "minority_class": "churn",
        "sensitive": {"column": "gender", "disparate_impact": {"churn": {"ratio": 0.7}, "stay": {"ratio": 0.95}}}}


def test_card_has_every_section_from_the_records():
    card = render_model_card(VERSION, METRICS, {"DatasetName": "churn-cases", "Sha256": "ab" * 32, "Rows": 500}, BIAS,
                             thresholds=Thresholds().to_dict(), policy=DEFAULT_POLICY,
                             diagnostics={"concentrated": True, "mean_offdiag": 0.26, "effective_rank": 1.3,
                                          "hint": "lower alpha"})
    for heading in ("# Model card: churn version 4", "## Intended use", "## Data", "### Bias report", "## Method and parameters",
                    "## Metrics", "## Monitoring thresholds", "## Known risks and limits", "## Approvals"):
        assert heading in card, heading
    assert "**Approval status: Approved**" in card
    assert "| version (sha256) | " + "ab" * 32 + " |" in card
    assert "| churn | 8 | 12 |" in card and "| validation accuracy | 0.81 |" in card
    assert "disparate impact for churn: 0.7 (below the four-fifths rule)" in card
    assert "| maria | 2026-03-02T09:00:00Z | ok / ship |" in card  # table-safe
    assert "| retrain when drift share >= | 0.3 |" in card and "| drift significance (family-wise alpha) | 0.01 |" in card
    risks = card.split("## Known risks and limits")[1]
    assert "**Kernel concentration**" in risks and "lower alpha" in risks
    assert "**Class imbalance**: 400 cases of 'stay' against 100 of 'churn' (ratio 4.0)" in risks
    assert "**Weak classes**: validation recall churn 0.40" in risks
    assert "**Small validation set**: 20" in risks
    assert "**Unstable accuracy**: validation 0.810 vs cross-validated 0.950" in risks
    assert "**Sampled similarity**: fidelities are estimated from 512 shots with noise 0.01" in risks
    assert "**Not approved**" not in risks


def test_balanced_healthy_model_gets_no_alarm_risks():
    risks = known_risks({"validation:accuracy": 0.95, "cv:accuracy": 0.94, "validation:n": 200,
                         "validation:recall": {"a": 0.93, "b": 0.97}},
                        {"a": 100, "b": 110}, {"concentrated": False, "mean_offdiag": 0.4, "effective_rank": 30.0},
                        status="PendingManualApproval")
    flagged = [r for r in risks if r.startswith("**")]
    assert flagged == ["**Not approved**: this version is PendingManualApproval; it must not serve production traffic until a manager approves it."]
    assert any("not concentrated" in r for r in risks)


def test_card_from_the_real_fitted_model_and_case_base(fitted_model, iris_cases):
    """What the training entrypoint passes: job name, hyperparameters, metrics, the model, the dataset."""
    card = render_model_card(job_name="iris-job", hyperparameters={"feature_map": "zz", "k": "5"},
                             metrics={"validation:accuracy": 0.93, "labels": [str(c) for c in fitted_model.classes_]},
                             model=fitted_model, dataset={"name": "iris", "sha256": iris_cases.sha256, "label": "species"},
                             bias_report=iris_cases.bias_report())
    assert card.startswith("# Model card: iris-job")
    assert iris_cases.sha256 in card and "Not registered yet" in card
    assert f"| k (chosen) | {fitted_model.k_} |" in card
    diag = fitted_model.kernel_diagnostics_
    assert ("**Kernel concentration**" in card) == bool(diag["concentrated"])
    assert "no sensitive attribute was analysed" in card
    assert "**Class imbalance**" not in card  # iris is balanced


def test_class_counts_come_from_the_models_memory_when_no_bias_report(fitted_model):
    card = render_model_card(job_name="iris-job", metrics={}, model=fitted_model)
    assert "| classes | setosa (50), versicolor (50), virginica (50) |" in card
