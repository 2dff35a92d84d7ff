"""`qcbr cases validate|upload`: exit codes, output, and the one-line errors on stderr."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qcbr.cases import CaseBase, demo_case_base
from qcbr.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def iris_csv(tmp_path):
    path = tmp_path / "Iris Flowers (v2).csv"
    path.write_bytes(demo_case_base("iris").frame.drop(columns="case_id").to_csv(index=False, sep=";").encode("utf-8-sig"))
    return path


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("QCBR_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("QCBR_USER", raising=False)
    monkeypatch.delenv("QCBR_BACKEND", raising=False)
    monkeypatch.delenv("QCBR_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


def run_main(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_validate_prints_summary(capsys, iris_csv):
    code, out, err = run_main(capsys, "cases", "validate", str(iris_csv), "--label", "species")
    assert code == 0 and err == ""
    sha = CaseBase.from_file(iris_csv, label="species").sha256
    assert "rows:      150" in out and "3 (setosa 50, versicolor 50, virginica 50)" in out
    assert "delimiter ';', utf-8-sig" in out and f"sha256:    {sha}" in out
    assert "ids generated" in out


def test_validate_json(capsys, iris_csv):
    code, out, _ = run_main(capsys, "cases", "validate", str(iris_csv), "--label", "species", "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["rows"] == 150 and summary["columns"] == 5 and summary["n_classes"] == 3
    same_data = CaseBase.from_frame(demo_case_base("iris").frame.drop(columns="case_id"), label="species")
    assert summary["sha256"] == same_data.sha256  # the ;-separated BOM file hashes like the frame


def test_validate_error_is_one_line_with_exit_1(capsys, iris_csv):
    code, out, err = run_main(capsys, "cases", "validate", str(iris_csv), "--label", "specis")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("qcbr: error: ")
    assert "has no column 'specis'" in err and "did you mean 'species'?" in err


def test_validate_missing_label_is_a_usage_error(capsys, iris_csv):
    code, _, err = run_main(capsys, "cases", "validate", str(iris_csv))
    assert code == 2 and "the following arguments are required: --label" in err


def test_validate_type_override_and_missing_policy(capsys, tmp_path):
    path = tmp_path / "zips.csv"
    path.write_text("zip,size,y\n02139,1,p\n10001,,q\n94103,3,p\n60601,4,q\n")
    code, out, _ = run_main(capsys, "cases", "validate", str(path), "--label", "y", "--json")
    assert code == 0 and json.loads(out)["column_types"]["zip"] == "numeric"
    code, out, _ = run_main(capsys, "cases", "validate", str(path), "--label", "y", "--type", "zip=categorical", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["column_types"]["zip"] == "categorical" and summary["imputed"] == {"size": 1}
    code, _, err = run_main(capsys, "cases", "validate", str(path), "--label", "y", "--missing", "reject")
    assert code == 1 and "'size' 1 (row 3)" in err
    code, _, err = run_main(capsys, "cases", "validate", str(path), "--label", "y", "--type", "zip=text")
    assert code == 2 and "COLUMN=TYPE" in err


def test_validate_binary_file(capsys, tmp_path):
    path = tmp_path / "book.xlsx"
    path.write_bytes(b"PK\x03\x04" + bytes(300))
    code, _, err = run_main(capsys, "cases", "validate", str(path), "--label", "y")
    assert code == 1 and "ZIP archive" in err and err.count("\n") == 1


def test_upload_rejects_a_bad_name_as_usage(capsys, iris_csv):
    code, _, err = run_main(capsys, "cases", "upload", str(iris_csv), "--label", "species", "--name", "bad name!")
    assert code == 2 and "is not a dataset name" in err


def test_cases_without_action_is_usage(capsys):
    code, _, err = run_main(capsys, "cases")
    assert code == 2 and "ACTION" in err


def test_python_dash_m_qcbr_exit_codes_and_stderr(iris_csv, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "QCBR_HOME": str(tmp_path / "home")}
    env.pop("QCBR_USER", None)

    def qcbr(*args):
        return subprocess.run([sys.executable, "-m", "qcbr", *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=60)

    ok = qcbr("cases", "validate", str(iris_csv), "--label", "species")
    assert ok.returncode == 0 and "rows:      150" in ok.stdout and ok.stderr == ""
    bad = qcbr("cases", "validate", str(iris_csv), "--label", "Species")
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.splitlines() == [bad.stderr.strip()] and "did you mean 'species'?" in bad.stderr
    usage = qcbr("cases", "validate", str(iris_csv))
    assert usage.returncode == 2 and "--label" in usage.stderr


def test_upload_end_to_end_through_the_local_backend(capsys, iris_csv, tmp_path):
    code, out, err = run_main(capsys, "cases", "upload", str(iris_csv), "--label", "species", "--json")
    assert code == 0, err
    record = json.loads(out)
    expected = CaseBase.from_file(iris_csv, label="species")
    assert record["DatasetName"] == "iris-flowers-v2"  # the file stem, sanitised
    assert record["Sha256"] == expected.sha256 and record["Created"] is True
    assert record["Rows"] == 150 and record["Label"] == "species" and record["Schema"] == expected.schema
    stored = tmp_path / "home" / "s3" / "qcbr-local" / "datasets" / "iris-flowers-v2" / expected.sha256
    assert (stored / "cases.parquet").is_file() and (stored / "schema.json").is_file()

    # the same content as Parquet, under the same name: a no-op returning the same version
    parquet = tmp_path / "iris.parquet"
    parquet.write_bytes(expected.to_parquet_bytes())
    code, out, _ = run_main(capsys, "cases", "upload", str(parquet), "--label", "species", "--name", "iris-flowers-v2")
    assert code == 0 and "already present" in out and expected.sha256 in out

    from qcbr.lifecycle import get_backend

    loaded = get_backend().load_dataset("iris-flowers-v2")
    assert loaded.sha256 == expected.sha256 and loaded.frame.equals(expected.frame)


def test_upload_refused_for_a_business_user(capsys, iris_csv, tmp_path, monkeypatch):
    from qcbr.users import UserStore

    UserStore(tmp_path / "home", rounds=4).add("bea", "business", "Correct-Horse-Battery-9")
    monkeypatch.setenv("QCBR_USER", "bea")
    code, out, err = run_main(capsys, "cases", "upload", str(iris_csv), "--label", "species")
    assert code == 1 and out == "" and err.count("\n") == 1
    assert "'bea'" in err and "upload dataset" in err
    assert not (tmp_path / "home" / "s3" / "qcbr-local" / "datasets").exists()


def test_cli_module_does_not_import_pandas():
    """`qcbr --help` must stay fast: the cases group loads pandas only when a command runs."""
    code = "import sys, qcbr.cli.cases; print('pandas' in sys.modules, 'qcbr.cases' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr
