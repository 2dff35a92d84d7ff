"""qcbr.cases: reading, schema, validation messages, content hashing, immutability, reports."""
from __future__ import annotations

import csv
import gzip
import io
import json
import os

import numpy as np
import pandas as pd
import pytest

import qcbr.cases as cases_mod
from qcbr.cases import CaseBase, demo_case_base, safe_csv, sanitize_name, sniff_delimiter
from qcbr.errors import CaseValidationError

HEADER = ["age", "income", "city", "member", "outcome"]
ROWS = [
    [34, 52000.5, "Zürich", "yes", "buy"],
    [45, 61000.0, "Genève", "no", "skip"],
    [23, 18000.25, "Zürich", "no", "skip"],
    [51, 99000.0, "Bâle", "yes", "buy"],
    [38, 47000.0, "Genève", "yes", "buy"],
    [29, 30500.75, "Bâle", "no", "skip"],
]


def write_csv(path, rows=ROWS, header=HEADER, delimiter=",", encoding="utf-8", quoting=csv.QUOTE_MINIMAL, fmt=str):
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, quoting=quoting, lineterminator="\r\n")
    w.writerow(header)
    for r in rows:
        w.writerow([fmt(v) for v in r])
    path.write_bytes(buf.getvalue().encode(encoding))
    return path


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(CaseValidationError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg, "errors must be one line (the CLI prints them as one)"
    return msg


@pytest.fixture()
def base_csv(tmp_path):
    return write_csv(tmp_path / "customers.csv")


@pytest.fixture()
def base(base_csv):
    return CaseBase.from_file(base_csv, label="outcome")


# -- reading ---------------------------------------------------------------------------------
def test_reads_csv_and_infers_schema(base):
    types = {c["name"]: c["type"] for c in base.schema["columns"]}
    assert types == {"age": "numeric", "income": "numeric", "city": "categorical", "member": "boolean", "outcome": "label"}
    assert [c["name"] for c in base.schema["columns"]] == HEADER  # the user's column order
    assert base.name == "customers"
    assert base.frame["city"].tolist() == ["Zürich", "Genève", "Zürich", "Bâle", "Genève", "Bâle"]
    assert base.frame["member"].tolist() == [True, False, False, True, True, False]
    assert base.frame["income"].dtype == np.float64
    assert base.y.tolist() == ["buy", "skip", "skip", "buy", "buy", "skip"]
    assert list(base.features.columns) == ["age", "income", "city", "member"]
    assert base.case_ids == ["case-0001", "case-0002", "case-0003", "case-0004", "case-0005", "case-0006"]


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimiters_give_the_same_sha(tmp_path, base, delimiter):
    other = CaseBase.from_file(write_csv(tmp_path / "d.txt", delimiter=delimiter), label="outcome")
    assert other.source["delimiter"] == delimiter
    assert other.sha256 == base.sha256


@pytest.mark.parametrize("encoding,expected", [
    ("utf-8-sig", "utf-8-sig"), ("latin-1", "cp1252"), ("cp1252", "cp1252"), ("utf-16", "utf-16"),
])
def test_encodings_give_the_same_content(tmp_path, base, encoding, expected):
    other = CaseBase.from_file(write_csv(tmp_path / "e.csv", delimiter=";", encoding=encoding), label="outcome")
    assert other.source["encoding"] == expected
    assert other.frame["city"].tolist() == base.frame["city"].tolist()  # accents decoded, BOM not in a name
    assert other.columns == HEADER
    assert other.sha256 == base.sha256


def test_latin1_bytes_undefined_in_cp1252_fall_back_to_latin1(tmp_path):
    # 0x81 is undefined in cp1252 and not UTF-8: only Latin-1 decodes it
    text = "a,b,y\n1,x\x81,p\n2,z,p\n3,w,q\n4,v,q\n"
    cb = CaseBase.from_file(io.BytesIO(text.encode("latin-1")), label="y")
    assert cb.source["encoding"] == "latin-1"
    assert cb.frame["b"].iloc[0] == "x\x81"


def test_resaved_csv_with_other_quoting_and_number_spelling_gives_same_sha(tmp_path, base):
    def spell(v):
        return f"{v:.2f}" if isinstance(v, float) else f" {v} "  # 52000.50, padded text

    other = CaseBase.from_file(write_csv(tmp_path / "q.csv", quoting=csv.QUOTE_ALL, fmt=spell), label="outcome")
    assert other.sha256 == base.sha256


def test_parquet_is_detected_by_magic_bytes_not_extension(tmp_path, base):
    df = pd.DataFrame(ROWS, columns=HEADER)
    df["member"] = df["member"] == "yes"
    disguised = tmp_path / "really_parquet.csv"
    df.to_parquet(disguised)
    cb = CaseBase.from_file(disguised, label="outcome")
    assert cb.source["kind"] == "parquet"
    assert cb.schema["columns"][3] == {"name": "member", "type": "boolean"}
    assert cb.sha256 == base.sha256


def test_decimal_comma_in_semicolon_csv(tmp_path, base):
    text = "age;income;city;member;outcome\n"
    for r in ROWS:
        text += ";".join([str(r[0]), str(r[1]).replace(".", ","), r[2], r[3], r[4]]) + "\n"
    cb = CaseBase.from_file(io.BytesIO(text.encode()), label="outcome")
    assert cb.summary()["decimal_comma"] == ["income"]
    assert cb.frame["income"].tolist() == [52000.5, 61000.0, 18000.25, 99000.0, 47000.0, 30500.75]
    assert cb.sha256 == base.sha256


def test_file_like_uploads_are_read_from_the_start(base):
    class UploadedFile(io.BytesIO):  # Streamlit's UploadedFile: BytesIO with .name and .size
        def __init__(self, data, name):
            super().__init__(data)
            self.name, self.size = name, len(data)

    data = write_csv_bytes()
    upload = UploadedFile(data, "Customers 2024.csv")
    upload.read()  # a preview already consumed it
    cb = CaseBase.from_file(upload, label="outcome")
    assert cb.name == "customers-2024"
    assert cb.source["name"] == "Customers 2024.csv"
    assert cb.sha256 == base.sha256
    text_mode = CaseBase.from_file(io.StringIO(data.decode()), label="outcome")
    assert text_mode.sha256 == base.sha256
    assert CaseBase.from_file(data, label="outcome").sha256 == base.sha256
    anonymous = CaseBase.from_file(data, label="outcome", validate=False)
    assert anonymous.name == "cases" and anonymous.source["name"] == "the uploaded data"
    named = error_of(CaseBase.from_file, data, label="nope", source_name="Customers 2024.csv")
    assert named.startswith("Customers 2024.csv has no column 'nope'")


def write_csv_bytes() -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HEADER)
    w.writerows(ROWS)
    return buf.getvalue().encode()


def test_quoted_delimiters_and_newlines_blank_rows_and_trailing_delimiters(tmp_path):
    text = (
        'note;size;y;\n'
        '"a; b";1;p;\n'
        '\n'
        '"multi\nline";2;p;\n'
        ';;;\n'
        'c;3;q;\n'
        'd;4;q;\n'
    )
    cb = CaseBase.from_file(io.BytesIO(text.encode()), label="y")
    assert cb.source["delimiter"] == ";"
    assert cb.columns == ["note", "size", "y"]  # the trailing empty column is dropped
    assert cb.frame["note"].tolist() == ["a; b", "multi\nline", "c", "d"]
    s = cb.summary()
    assert s["rows"] == 4 and s["source"]["blank_rows_dropped"] == 2 and s["source"]["empty_columns_dropped"] == 1


def test_row_numbers_are_spreadsheet_rows_despite_blank_lines(tmp_path):
    path = tmp_path / "gaps.csv"
    path.write_text("x,y\n1,a\n\n2,a\n3,b\n4,\n5,b\n")  # the empty label is on file row 6
    msg = error_of(CaseBase.from_file, path, label="y")
    assert "row 6 " in msg and "header is row 1" in msg


def test_sniffer_ignores_commas_inside_quoted_text():
    text = 'name;comment;y\nann;"good, fast, cheap";p\nbob;"slow, dear";q\n'
    assert sniff_delimiter(text) == ";"
    assert sniff_delimiter("a\tb\tc\n1,5\t2\t3\n") == "\t"


# -- validation errors: one test per case, asserting the message ----------------------------
def test_error_empty_file(tmp_path):
    (tmp_path / "empty.csv").write_bytes(b"")
    msg = error_of(CaseBase.from_file, tmp_path / "empty.csv", label="y")
    assert "empty.csv is empty (0 bytes)" in msg and "header row" in msg
    (tmp_path / "blank.csv").write_bytes(b" \r\n\n")
    assert "is empty" in error_of(CaseBase.from_file, tmp_path / "blank.csv", label="y")


def test_error_header_but_no_cases(tmp_path):
    (tmp_path / "h.csv").write_text("a,b,y\n\n")
    msg = error_of(CaseBase.from_file, tmp_path / "h.csv", label="y")
    assert "header row ('a', 'b', 'y') but no cases" in msg


@pytest.mark.parametrize("data,what", [
    (bytes(range(256)) * 8, "binary file (it holds NUL bytes)"),
    (b"PK\x03\x04" + b"\x14" * 200, "ZIP archive (an .xlsx"),
    (gzip.compress(b"a,b\n1,2\n"), "gzip-compressed"),
    (b"\x80\x04\x95" + b"x" * 50, "pickle, which qcbr never loads"),
    (bytes(range(1, 32)) * 40, "looks binary"),
])
def test_error_binary_file(tmp_path, data, what):
    path = tmp_path / "upload.csv"
    path.write_bytes(data)
    msg = error_of(CaseBase.from_file, path, label="y")
    assert "upload.csv" in msg and what in msg and "Fix:" in msg


def test_error_truncated_parquet(tmp_path, base):
    data = base.to_parquet_bytes()
    (tmp_path / "t.parquet").write_bytes(data[: len(data) // 2])
    assert "truncated" in error_of(CaseBase.from_file, tmp_path / "t.parquet", label="outcome")


def test_error_no_label_given_lists_columns_and_likely_label(base_csv):
    msg = error_of(CaseBase.from_file, base_csv, label=None)
    assert "no label column given" in msg and "--label" in msg
    assert "likely: 'outcome'" in msg and "'age', 'income', 'city', 'member', 'outcome'" in msg


def test_error_unknown_label_suggests_close_matches(base_csv):
    msg = error_of(CaseBase.from_file, base_csv, label="outcom")
    assert "customers.csv has no column 'outcom'" in msg and "did you mean 'outcome'?" in msg
    msg = error_of(CaseBase.from_file, base_csv, label="OUTCOME")
    assert "did you mean 'outcome'?" in msg


def test_error_fewer_than_two_classes(tmp_path):
    write_csv(tmp_path / "one.csv", rows=[r[:4] + ["buy"] for r in ROWS])
    msg = error_of(CaseBase.from_file, tmp_path / "one.csv", label="outcome")
    assert "only one class ('buy', 6 cases)" in msg and "at least 2 classes" in msg


def test_error_class_with_one_case(tmp_path):
    rows = [r[:4] + [lab] for r, lab in zip(ROWS, ["buy", "skip", "buy", "skip", "rare", "buy"])]
    write_csv(tmp_path / "rare.csv", rows=rows)
    msg = error_of(CaseBase.from_file, tmp_path / "rare.csv", label="outcome")
    assert "1 class with only one case: 'rare' (row 6)" in msg and "at least 2 cases" in msg


def test_error_duplicate_column_names(tmp_path):
    (tmp_path / "dup.csv").write_text("a,b,a,y,b\n1,2,3,p,5\n1,2,3,q,5\n")
    msg = error_of(CaseBase.from_file, tmp_path / "dup.csv", label="y")
    assert "duplicate column names" in msg
    assert "'a' at columns 1 (A), 3 (C)" in msg and "'b' at columns 2 (B), 5 (E)" in msg
    frame = pd.DataFrame([[1, 2, "p"]], columns=["a", "a", "y"])
    assert "'a' at columns 1 (A), 2 (B)" in error_of(CaseBase.from_frame, frame, label="y")


def test_error_unparseable_numbers_beyond_tolerance(tmp_path):
    values = ["1.5"] * 16 + ["abc", "1,234", "n.a.", "12kg"]
    rows = [[v, "p" if i % 2 else "q"] for i, v in enumerate(values)]
    write_csv(tmp_path / "num.csv", rows=rows, header=["weight", "y"])
    msg = error_of(CaseBase.from_file, tmp_path / "num.csv", label="y")
    assert "column 'weight' in" in msg and "is numeric but 4 of 20 values (20.0%, over the 5% tolerance)" in msg
    assert "row 18 'abc', row 19 '1,234', row 20 'n.a.', row 21 '12kg'" in msg
    assert "--type 'weight=categorical'" in msg


def test_unparseable_numbers_within_tolerance_become_missing_and_are_imputed(tmp_path):
    values = [str(v) for v in range(1, 21)] + ["oops"]
    rows = [[v, "p" if i % 2 else "q"] for i, v in enumerate(values)]
    write_csv(tmp_path / "ok.csv", rows=rows, header=["n", "y"])
    cb = CaseBase.from_file(tmp_path / "ok.csv", label="y")
    s = cb.summary()
    assert s["coerced"] == {"n": 1} and s["imputed"] == {"n": 1} and s["imputed_values"] == {"n": 10.5}
    assert cb.frame["n"].iloc[-1] == 10.5
    assert any("row 22 'oops'" in w for w in s["warnings"])
    with pytest.raises(CaseValidationError, match="'n' 1 \\(row 22\\)"):
        CaseBase.from_file(tmp_path / "ok.csv", label="y", missing="reject")


def test_error_id_column_repeats(tmp_path):
    rows = [[f"c{i}", i, "p" if i % 2 else "q"] for i in range(8)]
    rows[5][0] = "c1"
    rows[7][0] = "c1"
    rows[6][0] = "c2"
    write_csv(tmp_path / "ids.csv", rows=rows, header=["case", "x", "y"])
    msg = error_of(CaseBase.from_file, tmp_path / "ids.csv", label="y", id_column="case")
    assert "id column 'case' in" in msg and "repeats 2 values: 'c1' (rows 3, 7, 9), 'c2' (rows 4, 8)" in msg


def test_error_unknown_id_column(base_csv):
    msg = error_of(CaseBase.from_file, base_csv, label="outcome", id_column="Age")
    assert "no column 'Age' to use as the id column; did you mean 'age'?" in msg


def test_error_too_many_columns(tmp_path, monkeypatch):
    header = [f"f{i}" for i in range(7)] + ["y"]
    write_csv(tmp_path / "wide.csv", rows=[[1] * 7 + ["p"], [2] * 7 + ["q"]], header=header)
    msg = error_of(CaseBase.from_file, tmp_path / "wide.csv", label="y", max_columns=5)
    assert "has 8 columns, over the limit of 5" in msg and "max_columns" in msg
    monkeypatch.setattr(cases_mod, "MAX_COLUMNS", 6)
    assert "over the limit of 6" in error_of(CaseBase.from_file, tmp_path / "wide.csv", label="y")


def test_error_file_over_size_limit(base_csv, monkeypatch):
    msg = error_of(CaseBase.from_file, base_csv, label="outcome", max_bytes=100)
    size = base_csv.stat().st_size
    assert f"customers.csv is {size} bytes, over the 100 bytes limit" in msg and "max_bytes" in msg
    monkeypatch.setattr(cases_mod, "MAX_FILE_BYTES", 50)  # the module default applies when no argument is given
    assert "over the 50 bytes limit" in error_of(CaseBase.from_file, base_csv, label="outcome")
    assert "over the 50 bytes limit" in error_of(CaseBase.from_file, io.BytesIO(base_csv.read_bytes()), label="outcome")


def test_error_ragged_row(tmp_path):
    (tmp_path / "rag.csv").write_text("a,b,y\n1,2,p\n3,4,q,9\n")
    msg = error_of(CaseBase.from_file, tmp_path / "rag.csv", label="y")
    assert "line 3 has 4 fields but the header has 3" in msg


def test_error_missing_path_and_folder(tmp_path):
    assert "does not exist" in error_of(CaseBase.from_file, tmp_path / "nope.csv", label="y")
    assert "is a folder" in error_of(CaseBase.from_file, tmp_path, label="y")


def test_error_unnamed_column_with_values(tmp_path):
    (tmp_path / "u.csv").write_text("a,,y\n1,2,p\n3,4,q\n")
    msg = error_of(CaseBase.from_file, tmp_path / "u.csv", label="y")
    assert "column 2 (B) has values but no name" in msg


def test_error_missing_labels_are_never_imputed(tmp_path):
    (tmp_path / "l.csv").write_text("a,y\n1,p\n2,\n3,q\n4,NA\n5,p\n6,q\n")
    msg = error_of(CaseBase.from_file, tmp_path / "l.csv", label="y")
    assert "label column 'y'" in msg and "empty in 2 rows 3, 5" in msg


def test_error_column_without_any_value(tmp_path):
    (tmp_path / "e.csv").write_text("a,b,y\n1,,p\n2,NA,q\n3,,p\n4,,q\n")
    assert "column 'b' in" in error_of(CaseBase.from_file, tmp_path / "e.csv", label="y")


# -- missing values ----------------------------------------------------------------------------
def test_missing_values_imputed_with_median_and_mode(tmp_path):
    (tmp_path / "m.csv").write_text(
        "x,c,b,y\n1,red,yes,p\nNA,blue,no,q\n3,?,yes,p\n10,red,,q\n,red,no,p\n5,blue,no,q\n"
    )
    cb = CaseBase.from_file(tmp_path / "m.csv", label="y")
    s = cb.summary()
    assert s["missing"]["x"] == 2 and s["missing"]["c"] == 1 and s["missing"]["b"] == 1
    assert s["imputed"] == {"x": 2, "c": 1, "b": 1} == cb.schema["imputed"]
    assert s["imputed_values"] == {"x": 4.0, "c": "red", "b": False}
    assert cb.frame["x"].tolist() == [1, 4, 3, 10, 4, 5]
    assert cb.frame["c"].tolist()[2] == "red" and cb.frame["b"].tolist()[3] is False


def test_missing_values_rejected_with_counts_and_rows(tmp_path):
    (tmp_path / "m.csv").write_text("x,c,y\n1,red,p\nNA,blue,q\n3,?,p\n,red,q\n5,,p\n6,blue,q\n")
    msg = error_of(CaseBase.from_file, tmp_path / "m.csv", label="y", missing="reject")
    assert "missing values in 2 columns and the policy is missing='reject'" in msg
    assert "'x' 2 (rows 3, 5)" in msg and "'c' 2 (rows 4, 6)" in msg and "--missing impute" in msg


def test_unknown_missing_policy():
    assert "'impute' or 'reject'" in error_of(
        CaseBase.from_frame, pd.DataFrame({"a": [1, 2], "y": ["p", "q"]}), label="y", missing="drop"
    )


# -- schema ------------------------------------------------------------------------------------
def test_id_column_detected_by_name_only_when_unique(tmp_path):
    frame = pd.DataFrame({"ID": ["a7", "b3", "c1", "d9"], "x": [1, 2, 3, 4], "y": ["p", "q", "p", "q"]})
    cb = CaseBase.from_frame(frame, label="y")
    assert cb.id_column == "ID" and cb.case_ids == ["a7", "b3", "c1", "d9"]
    assert list(cb.features.columns) == ["x"]
    assert CaseBase.from_frame(frame, label="y", id_column=False).id_column is None
    repeated = frame.assign(ID=["a", "a", "b", "c"])
    assert CaseBase.from_frame(repeated, label="y").id_column is None


def test_types_override_and_with_schema(base):
    cb = CaseBase.from_frame(base.frame, label="outcome", types={"age": "categorical"})
    assert cb.schema["columns"][0] == {"name": "age", "type": "categorical"}
    assert cb.frame["age"].tolist()[:2] == ["34", "45"]

    schema = base.schema
    schema["columns"][0]["type"] = "categorical"
    schema["columns"] = [c for c in schema["columns"] if c["name"] != "income"]  # dropped
    edited = base.with_schema(schema)
    assert edited.columns == ["age", "city", "member", "outcome"]
    assert edited.frame["age"].tolist()[:2] == ["34", "45"]
    assert edited.sha256 != base.sha256
    assert base.schema["columns"][0]["type"] == "numeric"  # the original is untouched

    bad = base.schema
    bad["columns"][2]["type"] = "text"
    assert "has type 'text'" in error_of(base.with_schema, bad)
    forced = base.schema
    forced["columns"][2]["type"] = "numeric"  # city holds no numbers
    assert "is numeric but 6 of 6 values" in error_of(base.with_schema, forced)


def test_pick_the_label_after_loading_without_validation(base_csv):
    draft = CaseBase.from_file(base_csv, validate=False)
    assert not draft.is_validated and draft.columns == HEADER and draft.schema["label"] is None
    with pytest.raises(CaseValidationError, match="no label column given"):
        draft.sha256
    chosen = draft.with_schema({**draft.schema, "label": "outcome"})
    assert chosen.is_validated and chosen.label == "outcome"
    assert chosen.sha256 == CaseBase.from_file(base_csv, label="outcome").sha256


def test_integer_labels_are_the_same_from_csv_and_parquet(tmp_path):
    frame = pd.DataFrame({"x": [0.1, 0.2, 0.3, 0.4], "y": [0, 1, 0, 1]})
    a = CaseBase.from_frame(frame, label="y")
    b = CaseBase.from_file(io.BytesIO(frame.to_csv(index=False).encode()), label="y")
    assert a.y.dtype == np.int64 and b.y.tolist() == [0, 1, 0, 1]
    assert a.sha256 == b.sha256


def test_sha_depends_on_values_and_column_order(base):
    changed = base.frame
    changed.loc[0, "age"] = 35
    assert CaseBase.from_frame(changed, label="outcome").sha256 != base.sha256
    reordered = base.frame[["income", "age", "city", "member", "outcome"]]
    assert CaseBase.from_frame(reordered, label="outcome").sha256 != base.sha256
    assert CaseBase.from_frame(base.frame, label="outcome").sha256 == base.sha256
    assert len(base.sha256) == 64 and int(base.sha256, 16) >= 0


# -- immutability ------------------------------------------------------------------------------
def test_case_base_is_immutable(base):
    sha, before = base.sha256, base.frame.copy(deep=True)
    f = base.frame
    f.loc[0, "age"] = -1
    f["income"] = 0.0
    f.iloc[1, 2] = "Paris"
    y = base.y
    y.iloc[0] = "skip"
    x = base.features
    x["age"] = x["age"] * 2
    arr = base.frame["age"].to_numpy()
    with pytest.raises(ValueError):
        arr[0] = 99.0
    pd.testing.assert_frame_equal(base.frame, before)
    assert base.sha256 == sha
    with pytest.raises(AttributeError, match="immutable"):
        base._label = "age"
    with pytest.raises(AttributeError):
        base.label = "age"
    with pytest.raises(TypeError):
        CaseBase()
    s = base.schema
    s["label"] = "age"
    assert base.schema["label"] == "outcome"


# -- summary and bias ---------------------------------------------------------------------------
def test_summary(base):
    s = base.summary()
    assert s["rows"] == 6 and s["columns"] == 5 and s["features"] == 4
    assert s["classes"] == {"buy": 3, "skip": 3} and s["n_classes"] == 2
    assert s["column_types"]["member"] == "boolean" and s["missing"]["age"] == 0 and s["imputed"] == {}
    assert s["sha256"] == base.sha256 and s["source"]["kind"] == "csv" and s["demo"] is False
    json.dumps(s)  # JSON-able


def make_bias_frame():
    # group a: 8 of 10 approved; group b: 4 of 10 approved
    return pd.DataFrame({
        "group": ["a"] * 10 + ["b"] * 10,
        "score": np.arange(20, dtype=float),
        "decision": ["yes"] * 8 + ["no"] * 2 + ["yes"] * 4 + ["no"] * 6,
    })


def test_bias_report_class_balance():
    cb = CaseBase.from_frame(make_bias_frame(), label="decision")
    r = cb.bias_report()
    assert r["class_counts"] == {"no": 8, "yes": 12}
    assert r["class_balance"] == {"no": 0.4, "yes": 0.6}
    assert r["imbalance_ratio"] == 1.5 and r["majority_class"] == "yes" and r["minority_class"] == "no"
    assert r["sensitive"] is None


def test_bias_report_disparate_impact_and_four_fifths_rule():
    cb = CaseBase.from_frame(make_bias_frame(), label="decision")
    r = cb.bias_report(sensitive="group")["sensitive"]
    assert r["groups"]["a"] == {"count": 10, "label_rates": {"no": 0.2, "yes": 0.8}}
    assert r["groups"]["b"]["label_rates"] == {"no": 0.6, "yes": 0.4}
    assert r["disparate_impact"]["yes"]["ratio"] == pytest.approx(0.5)
    assert r["disparate_impact"]["yes"]["min_group"] == "b" and r["disparate_impact"]["yes"]["max_group"] == "a"
    assert r["disparate_impact"]["no"]["ratio"] == pytest.approx(1 / 3)
    assert sorted(r["four_fifths_violations"]) == ["no", "yes"]
    fair = make_bias_frame().assign(decision=["yes"] * 8 + ["no"] * 2 + ["yes"] * 7 + ["no"] * 3)
    fr = CaseBase.from_frame(fair, label="decision").bias_report("group")["sensitive"]
    assert fr["disparate_impact"]["yes"]["ratio"] == pytest.approx(7 / 8) and fr["disparate_impact"]["yes"]["four_fifths_ok"]


def test_bias_report_bins_numeric_sensitive_and_rejects_bad_columns():
    cb = CaseBase.from_frame(make_bias_frame(), label="decision")
    r = cb.bias_report("score")["sensitive"]
    assert r["binned"] and len(r["groups"]) == 4 and sum(g["count"] for g in r["groups"].values()) == 20
    assert "did you mean 'group'?" in error_of(cb.bias_report, "grup")
    assert "is the label" in error_of(cb.bias_report, "decision")


# -- persistence and versions -----------------------------------------------------------------
def test_parquet_round_trip_keeps_sha_schema_and_imputed(tmp_path):
    (tmp_path / "m.csv").write_text("x,c,y\n1,red,p\nNA,blue,q\n3,red,p\n4,blue,q\n")
    cb = CaseBase.from_file(tmp_path / "m.csv", label="y", name="m")
    path = tmp_path / "cases.parquet"
    path.write_bytes(cb.to_parquet_bytes())
    (tmp_path / "schema.json").write_text(json.dumps(cb.schema))
    back = CaseBase.from_parquet(path, json.loads((tmp_path / "schema.json").read_text()))
    assert back.sha256 == cb.sha256 and back.schema == cb.schema
    assert back.summary()["imputed"] == {"x": 1}
    pd.testing.assert_frame_equal(back.frame, cb.frame)
    embedded = CaseBase.from_parquet(io.BytesIO(cb.to_parquet_bytes()))
    assert embedded.sha256 == cb.sha256 and embedded.name == "m"
    plain = tmp_path / "plain.parquet"
    cb.frame.to_parquet(plain)
    assert "carries no qcbr schema" in error_of(CaseBase.from_parquet, plain)


def test_append_makes_a_new_validated_version(base):
    more = pd.DataFrame({"age": [60, "61"], "income": ["70000", None], "city": ["Bern", "Bern"],
                         "member": ["no", True], "outcome": ["skip", "buy"]})
    bigger = base.append(more)
    assert len(bigger) == 8 and len(base) == 6
    assert bigger.sha256 != base.sha256
    assert bigger.case_ids[:6] == base.case_ids and bigger.case_ids[6:] == ["case-0007", "case-0008"]
    assert bigger.frame["income"].iloc[7] == float(np.median(list(base.frame["income"]) + [70000.0]))
    assert bigger.summary()["imputed"] == {"income": 1}
    pd.testing.assert_frame_equal(bigger.frame.iloc[:6].reset_index(drop=True), base.frame)
    assert "missing columns 'member'" in error_of(base.append, more.drop(columns="member"))
    junk = more.assign(age=["old", "older"])
    msg = error_of(base.append, junk)
    assert "row 7 'old', row 8 'older'" in msg and "rows 1-6 are the existing cases, 7-8 the appended ones" in msg


def test_append_rejects_repeated_ids():
    frame = pd.DataFrame({"case": ["a", "b", "c", "d"], "x": [1, 2, 3, 4], "y": ["p", "q", "p", "q"]})
    cb = CaseBase.from_frame(frame, label="y", id_column="case")
    msg = error_of(cb.append, pd.DataFrame({"case": ["e", "b"], "x": [5, 6], "y": ["p", "q"]}))
    assert "repeats 1 value: 'b' (rows 2, 6)" in msg


# -- safe CSV and names --------------------------------------------------------------------------
def test_safe_csv_neutralises_formulas():
    frame = pd.DataFrame({
        "=cmd": ["=HYPERLINK(\"http://x\")", "+1", "-2+3", "@SUM(A1)", "\tq", "\rr", "plain", "a=b"],
        "n": [-1.5, 2, 3, 4, 5, 6, 7, 8],
    })
    rows = list(csv.reader(io.StringIO(safe_csv(frame).decode("utf-8"), newline="")))
    assert rows[0] == ["'=cmd", "n"]
    assert [r[0] for r in rows[1:]] == ["'=HYPERLINK(\"http://x\")", "'+1", "'-2+3", "'@SUM(A1)", "'\tq", "'\rr", "plain", "a=b"]
    assert rows[1][1] == "-1.5"  # numbers stay numbers
    assert safe_csv(frame, bom=True).startswith(b"\xef\xbb\xbf")
    assert frame.iloc[0, 0].startswith("=")  # the input frame is untouched


def test_sanitize_name():
    assert sanitize_name("Customers 2024 (final).CSV") == "customers-2024-final-csv"
    assert sanitize_name("Größen Café") == "grossen-cafe"
    assert sanitize_name("...") == "cases"
    assert len(sanitize_name("x" * 100)) == 63


# -- demo data ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,rows,classes", [("iris", 150, 3), ("wine", 178, 3), ("breast_cancer", 569, 2)])
def test_demo_case_bases(name, rows, classes):
    cb = demo_case_base(name)
    s = cb.summary()
    assert s["rows"] == rows and s["n_classes"] == classes and s["demo"] is True
    assert cb.name == f"demo-{name}" and "DEMO DATA" in s["source"]["description"]
    assert cb.case_ids[0] == f"{name}-0001" and len(set(cb.case_ids)) == rows
    assert all(t == "numeric" for t in cb.feature_types.values())


def test_demo_unknown_name():
    assert "choose one of iris, wine, breast_cancer" in error_of(demo_case_base, "mnist")


def test_large_file_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(2000, 6)), columns=[f"f{i}" for i in range(6)])
    frame["y"] = rng.choice(["a", "b", "c"], size=2000)
    path = tmp_path / "big.csv"
    frame.to_csv(path, index=False, sep="\t")
    cb = CaseBase.from_file(path, label="y")
    np.testing.assert_array_equal(cb.features.to_numpy(), frame.iloc[:, :6].to_numpy())
    assert cb.sha256 == CaseBase.from_frame(frame, label="y").sha256
    assert os.path.getsize(path) > 100_000
