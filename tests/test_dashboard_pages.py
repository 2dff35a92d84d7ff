"""Every page x role on a fresh home (empty states), the Cases upload, and the pure pieces."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from dashboard import figures, nav, profile
from dashboard.testing import app_as, open_page, texts

PAIRS = [(role, spec.key) for role in ("business", "data_scientist", "manager") for spec in nav.pages_for(role)]

# what each page says when there is nothing yet (the next step, not a blank page)
EMPTY_HINT = {
    "overview": "Getting started",
    "cases": "Upload a case base",
    "circuits": "No cases to encode yet",
    "training": "Nothing to train on yet",
    "registry": "No model versions yet",
    "endpoints": "No endpoints yet",
    "monitoring": "Nothing to monitor yet",
    "predict": "No model is serving yet",
    "my_predictions": "No predictions yet",
}


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("QCBR_HOME", str(tmp_path))
    monkeypatch.setenv("QCBR_BCRYPT_ROUNDS", "4")
    for var in ("QCBR_BACKEND", "QCBR_CONFIG", "QCBR_USER"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


@pytest.mark.parametrize("role,key", PAIRS)
def test_every_page_renders_an_empty_state_for_every_role(home, role, key):
    at = open_page(app_as(role, home), key)
    assert not at.exception, [e.message for e in at.exception]
    assert at.title[0].value == nav.BY_KEY[key].title
    assert EMPTY_HINT[key] in texts(at)
    assert not at.error


def test_demo_button_only_for_data_scientists(home):
    ds = open_page(app_as("data_scientist", home), "overview")
    assert ds.button(key="overview_demo_seed").label == "Seed the demo"
    mgr = open_page(app_as("manager", home), "overview")
    assert "overview_demo_seed" not in [b.key for b in mgr.button]
    assert "Managers set the assumptions" not in texts(mgr) and "As a manager" in texts(mgr)


def test_a_missing_backend_module_is_an_explanation_not_a_crash(home, monkeypatch):
    (home / "config.toml").write_text('backend = "aws"\naws_bucket = "b"\n')
    monkeypatch.setitem(__import__("sys").modules, "qcbr.lifecycle.aws", None)  # as if not installed
    at = open_page(app_as("data_scientist", home), "training")
    assert not at.exception
    assert "backend is not available" in texts(at)


IRIS_CSV = (
    "id,sepal_length,sepal_width,petal_length,petal_width,colour,species\n"
    + "\n".join(
        f"c{i},{5 + (i % 7) * 0.3:.1f},{3 + (i % 5) * 0.2:.1f},{1 + (i % 11) * 0.5:.1f},{0.2 + (i % 3) * 0.8:.1f},"
        f"{'red' if i % 2 else 'blue'},{['setosa', 'versicolor', 'virginica'][i % 3]}"
        for i in range(60)
    )
).encode()


def test_cases_upload_validates_then_stores_a_version(home):
    at = open_page(app_as("data_scientist", home), "cases")
    at.file_uploader(key="cases_file").upload("flowers.csv", IRIS_CSV, "text/csv")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.selectbox(key="cases_label").value == "species"  # guessed from the name
    assert at.selectbox(key="cases_id").value == "id"  # detected: unique values, named id
    assert "Valid: 60 cases, 5 features, 3 classes" in texts(at)
    at.text_input(key="cases_name").set_value("flowers")
    at.button(key="cases_upload_btn").click().run()
    assert not at.exception
    assert "Stored flowers version" in texts(at)

    from qcbr.lifecycle import get_backend

    records = get_backend().list_datasets()
    assert [(r["DatasetName"], r["Rows"], r["Label"]) for r in records] == [("flowers", 60, "species")]
    # the same content again: no new version
    at.button(key="cases_upload_btn").click().run()
    assert "already stored" in texts(at)
    # the datasets tab profiles it
    assert "60" in [m.value for m in at.metric]
    assert at.selectbox(key="cases_dataset").value == "flowers"


def test_cases_sensitive_column_gives_a_bias_view(home):
    at = open_page(app_as("data_scientist", home), "cases")
    at.file_uploader(key="cases_file").upload("flowers.csv", IRIS_CSV, "text/csv")
    at.run()
    at.selectbox(key="cases_sensitive").set_value("colour").run()
    assert not at.exception
    assert any(c.key == "cases_upload_bias" for c in at.get("plotly_chart"))


def test_cases_validation_errors_are_shown_in_place_with_the_fix(home):
    broken = IRIS_CSV.replace(b",setosa\n", b",\n", 1)  # one case without a label
    at = open_page(app_as("data_scientist", home), "cases")
    at.file_uploader(key="cases_file").upload("broken.csv", broken, "text/csv")
    at.run()
    assert not at.exception
    message = "\n".join(e.value for e in at.error)
    assert "the cases need fixing" in message and "species" in message
    assert "cases_upload_btn" not in [b.key for b in at.button]  # nothing to store until it is fixed
    assert "Change the label" in texts(at)


def test_cases_unreadable_file_is_explained(home):
    at = open_page(app_as("data_scientist", home), "cases")
    at.file_uploader(key="cases_file").upload("x.csv", b"\x00\x01\x02binary\xff\xfe" * 20, "text/csv")
    at.run()
    assert not at.exception
    assert at.error and "Could not read x.csv" in at.error[0].value


CHURN_CSV = (
    "age,plan,outcome\n" + "\n".join(f"{20 + i},{['basic', 'pro'][i % 2]},{['yes', 'no'][i % 3 == 0]}" for i in range(40))
).encode()


def test_cases_a_second_file_starts_from_its_own_name_and_label(home):
    at = open_page(app_as("data_scientist", home), "cases")
    at.file_uploader(key="cases_file").upload("flowers.csv", IRIS_CSV, "text/csv")
    at.run()
    at.text_input(key="cases_name").set_value("my-flowers")
    at.selectbox(key="cases_sensitive").set_value("colour").run()
    assert at.text_input(key="cases_name").value == "my-flowers"
    # another file in the same session: nothing of the first file's choices may stick to it
    at.file_uploader(key="cases_file").upload("churn.csv", CHURN_CSV, "text/csv")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.text_input(key="cases_name").value == "churn"
    assert at.selectbox(key="cases_label").value == "outcome"
    assert at.selectbox(key="cases_sensitive").value == "(none)"
    assert "Valid: 40 cases, 2 features, 2 classes" in texts(at)


def test_cases_after_an_upload_the_datasets_tab_shows_the_new_dataset(home):
    at = open_page(app_as("data_scientist", home), "cases")
    at.file_uploader(key="cases_file").upload("flowers.csv", IRIS_CSV, "text/csv")
    at.run()
    at.button(key="cases_upload_btn").click().run()
    assert at.selectbox(key="cases_dataset").value == "flowers"
    at.file_uploader(key="cases_file").upload("churn.csv", CHURN_CSV, "text/csv")
    at.run()
    assert at.selectbox(key="cases_dataset").value == "flowers"  # nothing stored yet
    at.button(key="cases_upload_btn").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert "Stored churn version" in texts(at)
    assert at.selectbox(key="cases_dataset").value == "churn"
    assert "40" in [m.value for m in at.metric]  # its profile, not the flowers'
    at.run()  # and it stays chosen on the next rerun
    assert at.selectbox(key="cases_dataset").value == "churn"

# ------------------------------------------------------------------------------- pure pieces
def test_profile_aggregates_instead_of_rows():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=100_000), "c": rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 100_000),
                          "y": rng.choice(["p", "q"], 100_000)})
    frame.loc[:9, "x"] = np.nan
    schema = {"label": "y", "columns": [{"name": "x", "type": "numeric"}, {"name": "c", "type": "categorical"},
                                        {"name": "y", "type": "label"}]}
    prof = profile.profile(frame, schema)
    cols = {c["name"]: c for c in prof["columns"]}
    assert sum(cols["x"]["histogram"]["counts"]) == 100_000 - 10
    assert len(cols["x"]["histogram"]["edges"]) == len(cols["x"]["histogram"]["counts"]) + 1 <= 31
    assert len(cols["c"]["top"]) == profile.TOP_CATEGORIES and cols["c"]["other"] > 0
    assert prof["missing"]["x"] == pytest.approx(10 / 100_000)
    assert sum(prof["class_balance"].values()) == 100_000
    rates = profile.group_rates(frame, "c", "y")
    assert all(abs(sum(r.values()) - 1) < 1e-9 for r in rates.values())


def test_figures_are_small_whatever_the_data_size():
    counts, edges = np.histogram(np.random.default_rng(1).normal(size=100_000), bins=30)
    fig = figures.histogram(edges, counts, "x")
    assert len(fig.to_json()) < 20_000
    K = np.eye(4) * 0.5 + 0.5
    heat = figures.similarity_heatmap(K, list("abcd"))
    assert heat.data[0].z.shape == (4, 4)
    cmp = figures.exact_vs_sampled(np.array([0.2, 0.9]), np.array([0.25, 0.88]), shots=1024)
    assert list(cmp.data[1].x) == [0.2, 0.9]
    spread = figures.kernel_spread(np.full(50, 0.07), n_qubits=4)
    assert sum(spread.data[0].y) == 50
    assert figures.probabilities({"a": 0.7, "b": 0.3}, epsilon=0.6).layout.shapes[0].x0 == 0.6
    compared = figures.compare_metrics({"r1": {"acc": 0.9}, "r2": {"acc": 0.8, "f1": 0.7}})
    assert len(compared.data) == 2
    assert compared.layout.legend.orientation == "v" and compared.layout.legend.x > 1  # beside, not on the labels


def test_prediction_rows_join_ground_truth():
    from dashboard.components import prediction_rows

    records = [
        {"inference_id": "a", "time": "2026-01-01T00:00:00+00:00", "endpoint": "e", "model_version": 1, "user": "u",
         "response": {"predictions": [{"label": "x", "confidence": 0.9, "flagged": False}]}},
        {"inference_id": "b", "time": "2026-01-02T00:00:00+00:00", "endpoint": "e", "model_version": 1, "user": "u",
         "response": {"predictions": [{"label": "y", "confidence": 0.4, "flagged": True}]}},
    ]
    truth = [{"groundTruthData": {"data": "x", "encoding": "CSV"}, "eventMetadata": {"eventId": "a"},
              "eventVersion": "0"}]
    rows = prediction_rows(records, truth)
    assert rows["true_label"].fillna("-").tolist() == ["x", "-"]
    assert rows["correct"].tolist() == [True, None]
    assert rows["flagged"].tolist() == [False, True]
    assert len(prediction_rows([], [])) == 0


def test_errors_are_shown_by_kind():
    from streamlit.testing.v1 import AppTest

    def script():
        from dashboard.components import attempt
        from qcbr.errors import RoleError, StateError

        with attempt("approve"):
            raise RoleError("user 'x' (business user) may not approve model; only a manager may")
        with attempt("deploy"):
            raise StateError("version 3 is not approved; approve it first")
        with attempt("compute"):
            raise ZeroDivisionError("division by zero")

    at = AppTest.from_function(script).run()
    assert not at.exception
    messages = [e.value for e in at.error]
    assert messages[0].startswith("Not allowed. user 'x'")
    assert messages[1] == "Could not deploy: version 3 is not approved; approve it first"
    assert "unexpected ZeroDivisionError" in messages[2] and "terminal" in messages[2]


def test_paged_table_counts_in_plain_words():
    from streamlit.testing.v1 import AppTest

    def script():
        import pandas as pd

        from dashboard.components import paged_table

        paged_table(pd.DataFrame({"a": [1]}), key="one", page_size=25)
        paged_table(pd.DataFrame({"a": range(30)}), key="many", page_size=25)

    at = AppTest.from_function(script).run()
    assert [c.value for c in at.caption] == ["1 row · 1 page of 25", "30 rows · 2 pages of 25"]
