"""The case base: the classical cases (rows + a solution label) that the qCBR memory is built from.

Why this module is strict: everything downstream (encoding, training jobs, the registry's lineage,
drift baselines) trusts a ``CaseBase``. So a file is accepted only when it is unambiguous, and
every refusal is a ``CaseValidationError`` whose one-line message says what is wrong, where (file,
column, rows) and how to fix it. Row numbers in messages are 1-based: for CSV files they are the
file's rows as a spreadsheet shows them (the header is row 1); for Parquet files and frames they
are 1-based row positions.

Reading: CSV (delimiter sniffed among ``,`` ``;`` tab ``|``; UTF-8, UTF-8 with BOM, UTF-16 with
BOM, else cp1252/Latin-1) and Parquet (recognised by its ``PAR1`` magic bytes, whatever the file
is called). Paths, bytes and file-like objects (e.g. Streamlit's ``UploadedFile``) are accepted.

Schema: each column is ``numeric`` (float64), ``categorical`` (text), ``boolean``, ``id`` or
``label``. Inference: boolean words (true/false, yes/no, t/f, y/n) -> boolean; more than half of
the values parse as numbers -> numeric (then at most ``NUMERIC_TOLERANCE`` of them may fail to
parse; those become missing values); otherwise categorical. A column named ``id``/``case_id``
with unique values is taken as the id column unless ``id_column=False``. The ``schema`` dict is
meant to be read and edited by a person, then given back to ``with_schema``.

Missing values (empty cells and NA, N/A, NaN, null, None, ?, #N/A) follow a stated policy:
``"impute"`` (median for numeric, most frequent value for categorical/boolean; counted in
``summary()`` and in ``schema["imputed"]``) or ``"reject"`` (an error with counts and rows).
Missing labels and ids are always an error: they cannot be guessed.

Canonical content and ``sha256``: a case base is named by the SHA-256 of its canonical content,
which is (1) a JSON header ``{"format": "qcbr-cases/1", "label", "id_column", "columns": [[name,
type], ...] in the user's column order, "rows"}`` and (2) each column's normalised values in row
order: numeric as IEEE-754 float64 little-endian (-0.0 folded into 0.0), boolean as one byte 0/1,
integer labels as int64 little-endian, text (categorical, id, other labels) as UTF-8 with int64
length prefixes. So the hash does not depend on the file format (CSV or Parquet), delimiter,
quoting, encoding or BOM, number spelling ("1.50" vs "1.5", decimal comma), whitespace around
cells, blank lines, the name or the missing-value policy; it does depend on column order, row
order, the schema and the values after imputation.

Immutability: a ``CaseBase`` cannot be changed after it is built. ``frame``, ``features``, ``y``
return copy-on-write copies (pandas 3), so writing to them never reaches the case base; new
versions come from ``append`` and ``with_schema``.
"""
from __future__ import annotations

import copy
import csv
import difflib
import hashlib
import io
import json
import math
import os
import re
import unicodedata
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from qcbr.errors import CaseValidationError

# -- limits (module constants; each reader also takes them as arguments) ---------------------
MAX_FILE_BYTES = 200 * 1024 * 1024
MAX_COLUMNS = 500
NUMERIC_TOLERANCE = 0.05  # share of a numeric column's values that may fail to parse
MOSTLY_NUMERIC = 0.5  # more than this share parses as numbers -> the column is numeric
MAX_LISTED = 5  # how many rows/values an error message lists before "and N more"
HIGH_CARDINALITY = 50  # summary warns about categorical columns with more distinct values
NUMERIC_SENSITIVE_BINS = 4  # a numeric sensitive column with many values is cut into quartiles
MAX_SENSITIVE_GROUPS = 50

FEATURE_TYPES = ("numeric", "categorical", "boolean")
COLUMN_TYPES = FEATURE_TYPES + ("id", "label")
MISSING_POLICIES = ("impute", "reject")
DELIMITERS = (",", ";", "\t", "|")
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none", "nil", "?", "#n/a", "-nan"})
TRUE_TOKENS = frozenset({"true", "t", "yes", "y"})
FALSE_TOKENS = frozenset({"false", "f", "no", "n"})
ID_NAMES = frozenset({"id", "case_id", "caseid", "case-id", "case id", "record_id"})
LABEL_HINTS = ("label", "class", "target", "y", "outcome", "species", "diagnosis", "solution")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
CANONICAL_FORMAT = "qcbr-cases/1"
PARQUET_SCHEMA_KEY = b"qcbr.schema"

_BINARY_MAGIC = (
    (b"PK\x03\x04", "a ZIP archive (an .xlsx or .ods workbook is one)",
     "open it in the spreadsheet program and save the sheet as CSV (UTF-8) or Parquet"),
    (b"\xd0\xcf\x11\xe0", "an old Excel .xls / OLE document", "save the sheet as CSV (UTF-8)"),
    (b"\x1f\x8b", "a gzip-compressed file", "decompress it first (gunzip FILE)"),
    (b"BZh", "a bzip2-compressed file", "decompress it first (bunzip2 FILE)"),
    (b"\xfd7zXZ", "an xz-compressed file", "decompress it first (unxz FILE)"),
    (b"%PDF", "a PDF document", "export the table as CSV instead"),
    (b"\x89PNG", "a PNG image", "upload the table itself as CSV or Parquet"),
    (b"\xff\xd8\xff", "a JPEG image", "upload the table itself as CSV or Parquet"),
    (b"SQLite format 3\x00", "an SQLite database", "export the table as CSV (sqlite3 -csv -header)"),
    (b"ARROW1", "an Arrow/Feather file", "save it as Parquet (pandas: df.to_parquet)"),
    (b"\x80\x04", "a Python pickle, which qcbr never loads", "save the frame as Parquet or CSV"),
    (b"\x80\x05", "a Python pickle, which qcbr never loads", "save the frame as Parquet or CSV"),
)

DEMO_DATASETS = {
    "iris": ("load_iris", "species", "Fisher's iris flowers: 150 cases, 4 measurements, 3 species"),
    "wine": ("load_wine", "cultivar", "UCI wine recognition: 178 cases, 13 chemical features, 3 cultivars"),
    "breast_cancer": ("load_breast_cancer", "diagnosis",
                      "Wisconsin diagnostic breast cancer: 569 cases, 30 features, malignant/benign"),
}


# -- small helpers ---------------------------------------------------------------------------
def _q(value: Any) -> str:
    """Quote a name or value for a message (repr keeps spaces and odd characters visible)."""
    text = str(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return repr(text)


def _names(names: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(_q(n) for n in list(names)[:limit])
    more = len(names) - limit
    return shown + (f" and {more} more" if more > 0 else "")


def _rows(rows: Iterable[int], limit: int = MAX_LISTED) -> str:
    rows = [int(r) for r in rows]
    word = "row" if len(rows) == 1 else "rows"
    shown = ", ".join(str(r) for r in rows[:limit])
    more = len(rows) - limit
    return f"{word} {shown}" + (f" and {more} more" if more > 0 else "")


def _col_letter(position: int) -> str:
    """Spreadsheet column letters for a 1-based position (1 -> A, 27 -> AA)."""
    letters = ""
    while position > 0:
        position, rem = divmod(position - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def _suggest(wanted: str, columns: Sequence[str]) -> list[str]:
    exact = [c for c in columns if c.strip().lower() == str(wanted).strip().lower()]
    if exact:  # only the letter case differs: that is surely the one
        return exact[:3]
    close = difflib.get_close_matches(str(wanted), list(columns), n=3, cutoff=0.6)
    lowered = {c.lower(): c for c in columns}
    close += [lowered[c] for c in difflib.get_close_matches(str(wanted).lower(), list(lowered), n=3, cutoff=0.6)]
    out: list[str] = []
    for c in exact + close:
        if c not in out:
            out.append(c)
    return out[:3]


def _float_text(v: float) -> str:
    if math.isfinite(v) and v == int(v) and abs(v) < 2**53:
        return str(int(v))
    return repr(v)


def _cell_text(v: Any) -> str | None:
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, (bool, np.bool_)):
        return "True" if v else "False"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) else _float_text(float(v))
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace").strip()
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return str(v).strip()


def _text(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Cells as stripped text (object array, None where missing) and the missing mask."""
    if isinstance(series.dtype, pd.StringDtype):
        stripped = series.str.strip()
        values = stripped.to_numpy(dtype=object, na_value=None)
        missing = (stripped.isna() | stripped.str.lower().isin(MISSING_TOKENS)).to_numpy(dtype=bool)
    else:
        values = np.array([_cell_text(v) for v in series.tolist()], dtype=object)
        missing = np.array([v is None or v.lower() in MISSING_TOKENS for v in values], dtype=bool)
    values = values.copy()
    values[missing] = None
    return values, missing


def _is_plain_numeric(dtype) -> bool:
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


_DECIMAL_COMMA = re.compile(r"^([+-]?\d*),(\d+)$")


def _parse_numbers(series: pd.Series, decimal_comma: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, list, bool]:
    """-> (float64 values with NaN for missing/bad, missing mask, bad mask, texts, used decimal comma).

    ``texts`` (the cells as text, for error messages) is filled only when some value is bad.
    """
    if _is_plain_numeric(series.dtype):
        values = series.to_numpy(dtype="float64", na_value=np.nan).copy()
        missing = np.isnan(values)
        bad = np.isinf(values)
        texts = [_cell_text(v) for v in values] if bad.any() else []
        values[bad] = np.nan
        return values, missing, bad, texts, False
    if pd.api.types.is_bool_dtype(series.dtype):
        values = series.astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
        return values, np.isnan(values), np.zeros(len(values), bool), [], False
    if isinstance(series.dtype, pd.StringDtype):
        # vectorised path (CSV columns): parse everything, then look only at what did not parse
        stripped = series.str.strip()
        values = pd.to_numeric(stripped, errors="coerce").to_numpy(dtype="float64", na_value=np.nan).copy()
        unparsed = np.isnan(values)
        missing = np.zeros(len(values), bool)
        if unparsed.any():
            idx = np.flatnonzero(unparsed)
            sub = stripped.iloc[idx]
            missing[idx] = (sub.isna() | sub.str.lower().isin(MISSING_TOKENS)).to_numpy(dtype=bool)
        bad = (unparsed & ~missing) | np.isinf(values)
        if not bad.any():
            return values, missing, bad, [], False
        texts = stripped.to_numpy(dtype=object, na_value=None)
    else:
        texts, missing = _text(series)
        values = pd.to_numeric(pd.Series(texts, dtype=object), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        bad = ~missing & ~np.isfinite(values)
    texts = list(texts)
    used_comma = False
    if decimal_comma and bad.any():
        alt_text = pd.Series([_DECIMAL_COMMA.sub(r"\1.\2", t) if t and not m else None for t, m in zip(texts, missing)], dtype=object)
        alt = pd.to_numeric(alt_text, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        alt_bad = ~missing & ~np.isfinite(alt)
        if alt_bad.sum() < bad.sum():
            values, bad, used_comma = alt, alt_bad, True
    values = values.copy()
    values[bad | missing] = np.nan
    return values, missing, bad, texts, used_comma


def _parse_booleans(series: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """-> (object array of True/False/None, missing, bad, texts)."""
    if pd.api.types.is_bool_dtype(series.dtype):
        missing = series.isna().to_numpy(dtype=bool)
        values = np.array([None if m else bool(v) for v, m in zip(series.tolist(), missing)], dtype=object)
        return values, missing, np.zeros(len(values), bool), []
    texts, missing = _text(series)
    values = np.empty(len(texts), dtype=object)
    bad = np.zeros(len(texts), bool)
    truthy = TRUE_TOKENS | {"1", "1.0"}
    falsy = FALSE_TOKENS | {"0", "0.0"}
    for i, t in enumerate(texts):
        if t is None:
            continue
        low = t.lower()
        if low in truthy:
            values[i] = True
        elif low in falsy:
            values[i] = False
        else:
            bad[i] = True
    return values, missing, bad, list(texts)


def _infer_type(series: pd.Series, decimal_comma: bool) -> tuple[str, tuple | None]:
    """-> (type, the numeric parse when one was made, so that validation need not parse again)."""
    if pd.api.types.is_bool_dtype(series.dtype):
        return "boolean", None
    if _is_plain_numeric(series.dtype):
        return "numeric", None
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        return "categorical", None
    parsed = _parse_numbers(series, decimal_comma)
    values, missing, bad, _, _ = parsed
    present = int((~missing).sum())
    if present == 0:
        return "numeric", parsed  # validation reports the column as empty
    ok = int((~missing & ~bad).sum())
    if ok > MOSTLY_NUMERIC * present:
        return "numeric", parsed
    if isinstance(series.dtype, pd.StringDtype):
        lowered = series.str.strip().str.lower()[~missing]
        is_bool = bool(lowered.isin(TRUE_TOKENS | FALSE_TOKENS).all())
    else:
        texts, _ = _text(series)
        is_bool = all(str(v).lower() in (TRUE_TOKENS | FALSE_TOKENS) for v in texts[~missing])
    return ("boolean" if is_bool else "categorical"), None


def _mode(values: Sequence[Any]) -> Any:
    counts = pd.Series(list(values), dtype=object).value_counts(sort=False)
    best = counts.max()
    return sorted((v for v, c in counts.items() if c == best), key=lambda v: str(v))[0]


def _normalise_labels(texts: np.ndarray) -> pd.Series:
    """Labels that are all whole numbers become int64; any other label stays text."""
    ints = []
    for t in texts:
        try:
            f = float(t)
        except (TypeError, ValueError):
            return pd.Series(list(texts), dtype="str")
        if not math.isfinite(f) or f != int(f) or abs(f) >= 2**53:
            return pd.Series(list(texts), dtype="str")
        ints.append(int(f))
    return pd.Series(ints, dtype="int64")


def _hash_column(h, values: pd.Series, kind: str) -> None:
    h.update(b"\x00" + kind.encode() + b"\x00")
    if kind == "numeric":
        arr = values.to_numpy(dtype="float64").copy()
        arr[arr == 0.0] = 0.0  # fold -0.0
        h.update(arr.astype("<f8").tobytes())
    elif kind == "boolean":
        h.update(values.to_numpy(dtype=bool).astype(np.uint8).tobytes())
    elif kind == "int":
        h.update(values.to_numpy(dtype="int64").astype("<i8").tobytes())
    else:
        encoded = [str(v).encode("utf-8") for v in values.tolist()]
        h.update(np.array([len(e) for e in encoded], dtype="<i8").tobytes())
        h.update(b"".join(encoded))


def canonical_sha256(frame: pd.DataFrame, label: str, id_column: str | None, types: Mapping[str, str]) -> str:
    """SHA-256 of a normalised frame's canonical content (see the module docstring)."""
    h = hashlib.sha256()
    header = {
        "format": CANONICAL_FORMAT,
        "label": label,
        "id_column": id_column,
        "columns": [[name, kind] for name, kind in types.items()],
        "rows": int(len(frame)),
    }
    h.update(json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    for name, kind in types.items():
        col = frame[name]
        if kind == "label":
            _hash_column(h, col, "int" if pd.api.types.is_integer_dtype(col.dtype) else "text")
        elif kind in ("categorical", "id"):
            _hash_column(h, col, "text")
        else:
            _hash_column(h, col, kind)
    return h.hexdigest()


def safe_csv(frame: pd.DataFrame, bom: bool = False) -> bytes:
    """CSV bytes with every text cell (and header) that a spreadsheet would run as a formula
    (starting with = + - @ tab or carriage return) prefixed by a single quote.

    Why: exported predictions and cases are opened in Excel/Sheets by business users; a cell such
    as ``=HYPERLINK(...)`` planted in uploaded data would otherwise execute there (CSV injection).
    Numeric columns are written as numbers and left alone. ``bom=True`` adds a UTF-8 BOM so that
    Excel on Windows detects the encoding.
    """

    def neutralise(v: Any) -> Any:
        if isinstance(v, str) and v.startswith(FORMULA_PREFIXES):
            return "'" + v
        return v

    out = frame.copy()
    out.columns = [neutralise(str(c)) for c in out.columns]
    for name in out.columns:
        col = out[name]
        if not _is_plain_numeric(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
            out[name] = col.astype(object).map(neutralise)
    # RFC 4180 line ends: with "\n" alone a bare "\r" in a cell would go unquoted and split the row
    text = out.to_csv(index=False, lineterminator="\r\n")
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")


# -- reading ---------------------------------------------------------------------------------
def _read_source(source: Any, max_bytes: int, display: str | None = None) -> tuple[bytes, str]:
    """Bytes and a display name from a path, bytes, or a (binary or text) file-like object."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = display or "the uploaded data"
    elif hasattr(source, "read"):
        name = display or str(getattr(source, "name", None) or "the uploaded file")
        size = getattr(source, "size", None)
        try:  # read from the start even if someone (e.g. a preview) already read part of it
            if hasattr(source, "seek"):
                if size is None and hasattr(source, "tell"):
                    source.seek(0, os.SEEK_END)
                    size = source.tell()
                source.seek(0)
        except (OSError, ValueError):
            pass
        if isinstance(size, int) and size > max_bytes:
            raise CaseValidationError(_too_big(name, size, max_bytes))
        data = source.read(max_bytes + 1)
        if isinstance(data, str):
            data = data.encode("utf-8")
    else:
        path = Path(os.fspath(source))
        name = display or str(source)
        if not path.exists():
            raise CaseValidationError(f"{name} does not exist. Fix: check the path (it is relative to {Path.cwd()})")
        if path.is_dir():
            raise CaseValidationError(f"{name} is a folder, not a file. Fix: give the CSV or Parquet file inside it")
        size = path.stat().st_size
        if size > max_bytes:
            raise CaseValidationError(_too_big(name, size, max_bytes))
        data = path.read_bytes()
    if len(data) > max_bytes:
        raise CaseValidationError(_too_big(name, len(data), max_bytes))
    return data, name


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / (1024 * 1024):.1f} MB"


def _too_big(name: str, size: int, max_bytes: int) -> str:
    return (
        f"{name} is {_size(size)}, over the {_size(max_bytes)} limit for a case base. "
        f"Fix: drop columns or rows you do not need, save it as Parquet (smaller), "
        f"or raise the limit (max_bytes=...)"
    )


def _binary_error(name: str, data: bytes) -> str | None:
    for magic, what, fix in _BINARY_MAGIC:
        if data.startswith(magic):
            return f"{name} is not a CSV or Parquet file: it is {what}. Fix: {fix}"
    return None


def _decode(name: str, data: bytes) -> tuple[str, str]:
    if data.startswith(b"\xef\xbb\xbf"):
        try:
            return data[3:].decode("utf-8"), "utf-8-sig"
        except UnicodeDecodeError as exc:
            raise CaseValidationError(
                f"{name} starts with a UTF-8 byte-order mark but byte {exc.start + 3} is not UTF-8. "
                f"Fix: re-save the file as 'CSV UTF-8'"
            ) from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError:
            raise CaseValidationError(
                f"{name} starts with a UTF-16 byte-order mark but is not valid UTF-16. Fix: re-save it as 'CSV UTF-8'"
            ) from None
    head = data[:65536]
    if b"\x00" in head:
        raise CaseValidationError(
            f"{name} is a binary file (it holds NUL bytes), not CSV text or Parquet. "
            f"Fix: export the table as CSV (UTF-8) or Parquet"
        )
    for encoding in ("utf-8", "cp1252", "latin-1"):
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes any bytes")  # pragma: no cover


def _check_text(name: str, text: str) -> None:
    sample = text[:65536]
    control = sum(1 for ch in sample if ord(ch) < 32 and ch not in "\t\n\r\f\v" or 0x7F <= ord(ch) <= 0x9F)
    if sample and control > max(2, 0.01 * len(sample)):
        raise CaseValidationError(
            f"{name} looks binary: {control} of its first {len(sample)} characters are control characters. "
            f"Fix: upload a CSV (UTF-8) or Parquet file"
        )


def sniff_delimiter(text: str) -> str:
    """The delimiter among , ; tab | that splits the first rows into the most consistent columns.

    Why not csv.Sniffer: it guesses from character frequencies and is easily fooled by decimal
    commas and by commas inside quoted text; parsing with each candidate and scoring row-width
    consistency against the header is both simpler and more robust.
    """
    sample = text[:65536]
    if len(text) > len(sample) and "\n" in sample:
        sample = sample[: sample.rfind("\n")]
    best, best_score = ",", (-1.0, 0)
    for delim in DELIMITERS:
        try:
            rows = [r for r in csv.reader(io.StringIO(sample), delimiter=delim) if any(c.strip() for c in r)]
        except csv.Error:
            continue
        if not rows or len(rows[0]) < 2:
            continue
        width = len(rows[0])
        consistency = sum(len(r) == width for r in rows) / len(rows)
        score = (consistency, width)
        if score > best_score:
            best, best_score = delim, score
    return best


_PARSER_LINE = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


def _parse_csv(name: str, text: str, delimiter: str) -> pd.DataFrame:
    try:
        grid = pd.read_csv(
            io.StringIO(text), sep=delimiter, header=None, dtype=str, keep_default_na=False,
            na_filter=False, skip_blank_lines=False, engine="c", quotechar='"',
        )
    except pd.errors.EmptyDataError:
        raise CaseValidationError(
            f"{name} is empty (no header row, no cases). Fix: export it again with a header row of column names "
            f"and one row per case"
        ) from None
    except pd.errors.ParserError as exc:
        m = _PARSER_LINE.search(str(exc))
        shown = "tab" if delimiter == "\t" else repr(delimiter)
        if m:
            expected, line, saw = m.groups()
            raise CaseValidationError(
                f"{name}: line {line} has {saw} fields but the header has {expected} (delimiter {shown}). "
                f"Fix: quote values that contain the delimiter, or remove the extra fields on that line"
            ) from None
        raise CaseValidationError(
            f"{name} could not be parsed as CSV (delimiter {shown}): {' '.join(str(exc).split())}. "
            f"Fix: check quoting (an unclosed '\"' swallows the rest of the file)"
        ) from None
    return grid.fillna("")


def _read_raw(source: Any, max_bytes: int, display: str | None = None) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """The table as read (cells untouched) with each row's 1-based number and source facts."""
    data, name = _read_source(source, max_bytes, display)
    if not data.strip():
        raise CaseValidationError(
            f"{name} is empty ({len(data)} bytes). Fix: export it again with a header row of column names "
            f"and one row per case"
        )
    if data.startswith(b"PAR1"):
        return _read_parquet_bytes(name, data)
    problem = _binary_error(name, data)
    if problem:
        raise CaseValidationError(problem)
    text, encoding = _decode(name, data)
    _check_text(name, text)
    delimiter = sniff_delimiter(text)
    grid = _parse_csv(name, text, delimiter)
    header = [str(c).strip() for c in grid.iloc[0].tolist()]
    body = grid.iloc[1:].reset_index(drop=True)
    rows = np.arange(2, len(body) + 2)
    # a row with every cell empty is a blank line (or Excel's trailing ",,,"): not a case
    filled = np.ones(len(body), dtype=bool)
    if len(body):
        filled = (body.apply(lambda c: c.str.strip() != "")).any(axis=1).to_numpy()
    blank_rows = int((~filled).sum())
    body, rows = body[filled].reset_index(drop=True), rows[filled]
    # an unnamed column without any value is a trailing delimiter: not a column
    keep, empty_cols = [], 0
    for i, col_name in enumerate(header):
        if col_name == "" and not (body[body.columns[i]].str.strip() != "").any():
            empty_cols += 1
            continue
        keep.append(i)
    unnamed = [i + 1 for i in keep if header[i] == ""]
    body = body.iloc[:, keep]
    header = [header[i] for i in keep]
    if unnamed:
        where = ", ".join(f"{p} ({_col_letter(p)})" for p in unnamed)
        raise CaseValidationError(
            f"{name}: column {where} has values but no name in the header row (row 1). "
            f"Fix: type a column name into the header cell, or delete the column"
        )
    body.columns = header
    body = body.astype("str")
    source = {
        "name": name, "kind": "csv", "encoding": encoding, "delimiter": delimiter, "bytes": len(data),
        "blank_rows_dropped": blank_rows, "empty_columns_dropped": empty_cols,
        "row_numbers": "file rows as a spreadsheet shows them; the header is row 1",
    }
    if len(body) == 0:
        raise CaseValidationError(
            f"{name} has a header row ({_names(header, 8)}) but no cases. Fix: add one row per case below the header"
        )
    return body, rows, source


def _read_parquet_bytes(name: str, data: bytes) -> tuple[pd.DataFrame, np.ndarray, dict]:
    import pyarrow.parquet as pq

    if not data.endswith(b"PAR1"):
        raise CaseValidationError(
            f"{name} starts like a Parquet file but is truncated (no closing PAR1 footer). Fix: copy or export it again"
        )
    try:
        table = pq.read_table(io.BytesIO(data))
        frame = table.to_pandas()
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise CaseValidationError(
            f"{name} is not a readable Parquet file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            f"Fix: export it again, or save it as CSV"
        ) from None
    metadata = table.schema.metadata or {}
    source = {
        "name": name, "kind": "parquet", "encoding": None, "delimiter": None, "bytes": len(data),
        "row_numbers": "1-based row positions",
    }
    if PARQUET_SCHEMA_KEY in metadata:
        try:
            source["embedded_schema"] = json.loads(metadata[PARQUET_SCHEMA_KEY])
        except ValueError:
            pass
    frame = frame.reset_index(drop=True)
    if len(frame) == 0:
        raise CaseValidationError(f"{name} is a Parquet file with no rows. Fix: export the cases again")
    return frame, np.arange(1, len(frame) + 1), source


def _frame_columns(name: str, frame: pd.DataFrame, max_columns: int) -> list[str]:
    if isinstance(frame.columns, pd.MultiIndex):
        raise CaseValidationError(f"{name} has multi-level column names. Fix: flatten them (one name per column)")
    columns = [str(c).strip() for c in frame.columns]
    if len(columns) > max_columns:
        raise CaseValidationError(
            f"{name} has {len(columns)} columns, over the limit of {max_columns}. Fix: keep only the columns "
            f"that describe a case (or reduce them first, e.g. with PCA), or raise the limit (max_columns=...)"
        )
    seen: dict[str, list[int]] = {}
    for i, c in enumerate(columns, start=1):
        seen.setdefault(c, []).append(i)
    dupes = {c: p for c, p in seen.items() if len(p) > 1}
    if dupes:
        parts = "; ".join(
            f"{_q(c)} at columns " + ", ".join(f"{p} ({_col_letter(p)})" for p in pos) for c, pos in dupes.items()
        )
        raise CaseValidationError(
            f"{name} has duplicate column names: {parts}. Fix: rename the columns so that every header is unique"
        )
    return columns


# -- the case base ---------------------------------------------------------------------------
class CaseBase:
    """An immutable, validated, content-addressed set of cases (see the module docstring)."""

    __slots__ = (
        "_raw", "_rows", "_source", "_name", "_label", "_id_column", "_types", "_missing",
        "_tolerance", "_prior_imputed", "_state", "_parsed",
    )

    # construction -------------------------------------------------------------------------
    def __init__(self, *args, **kwargs):
        raise TypeError("build a CaseBase with CaseBase.from_file, from_frame or from_parquet")

    @classmethod
    def _make(
        cls, raw: pd.DataFrame, rows: np.ndarray, source: dict, *, label: str | None, id_column,
        name: str | None, missing: str, types: Mapping[str, str] | None, numeric_tolerance: float | None,
        max_columns: int | None, prior_imputed: Mapping[str, int] | None = None, validate: bool = True,
    ) -> "CaseBase":
        where = source["name"]
        if missing not in MISSING_POLICIES:
            raise CaseValidationError(
                f"missing={missing!r} is not a missing-value policy. Fix: use 'impute' or 'reject'"
            )
        max_columns = MAX_COLUMNS if max_columns is None else max_columns
        tolerance = NUMERIC_TOLERANCE if numeric_tolerance is None else float(numeric_tolerance)
        columns = _frame_columns(where, raw, max_columns)
        raw = raw.copy(deep=False)
        raw.columns = columns
        raw = raw.reset_index(drop=True)
        label = None if label is None else str(label)
        decimal_comma = source.get("delimiter") not in (None, ",")
        types = dict(types or {})
        unknown = [c for c in types if c not in columns]
        if unknown:
            hint = _suggest(unknown[0], columns)
            raise CaseValidationError(
                f"{where}: the types given name columns that do not exist: {_names(unknown)}"
                + (f" (did you mean {_names(hint)}?)" if hint else "")
                + f". Columns: {_names(columns)}"
            )
        bad_types = {c: t for c, t in types.items() if t not in COLUMN_TYPES}
        if bad_types:
            c, t = next(iter(bad_types.items()))
            raise CaseValidationError(
                f"{where}: column {_q(c)} has type {t!r}, which is not a column type. "
                f"Fix: use one of {', '.join(FEATURE_TYPES)} (or id / label)"
            )
        if id_column is None:
            id_column = cls._detect_id(raw, columns, exclude={label})
        elif id_column is False:
            id_column = None
        else:
            id_column = str(id_column)
        for c, t in types.items():
            if t == "label" and c != label:
                raise CaseValidationError(
                    f"{where}: column {_q(c)} is typed 'label' but the label is {_q(label)}. "
                    f"Fix: give {_q(c)} a feature type ({', '.join(FEATURE_TYPES)}) or make it the label"
                )
            if t == "id" and c != id_column:
                raise CaseValidationError(
                    f"{where}: column {_q(c)} is typed 'id' but the id column is {_q(id_column)}. "
                    f"Fix: give {_q(c)} a feature type or make it the id column (id_column=...)"
                )
        resolved: dict[str, str] = {}
        parsed: dict[str, tuple] = {}
        for c in columns:
            if c == label:
                resolved[c] = "label"
            elif c == id_column:
                resolved[c] = "id"
            elif c in types:
                resolved[c] = types[c]
            else:
                resolved[c], numbers = _infer_type(raw[c], decimal_comma)
                if numbers is not None and resolved[c] == "numeric":
                    parsed[c] = numbers
        self = object.__new__(cls)
        state = dict(
            _raw=raw, _rows=np.asarray(rows), _source=source, _label=label, _id_column=id_column,
            _name=name or _default_name(where), _types=resolved, _missing=missing, _tolerance=tolerance,
            _prior_imputed=dict(prior_imputed or {}), _state=None, _parsed=parsed,
        )
        for key, value in state.items():
            object.__setattr__(self, key, value)
        if validate:
            self.validate()
        return self

    @staticmethod
    def _detect_id(raw: pd.DataFrame, columns: list[str], exclude: set) -> str | None:
        for c in columns:
            if c in exclude or c.strip().lower() not in ID_NAMES:
                continue
            texts, missing = _text(raw[c])
            if not missing.any() and len(set(texts.tolist())) == len(texts):
                return c
        return None

    @classmethod
    def from_file(
        cls, path_or_buffer: Any, label: str | None = None, id_column: str | None | bool = None,
        name: str | None = None, missing: str = "impute", *, types: Mapping[str, str] | None = None,
        max_bytes: int | None = None, max_columns: int | None = None, numeric_tolerance: float | None = None,
        validate: bool = True, source_name: str | None = None,
    ) -> "CaseBase":
        """Read a CSV or Parquet file (path, bytes or file-like) and, by default, validate it.

        ``validate=False`` still refuses unreadable files but defers the checks that need the
        label, so that a user interface can show the columns and inferred schema before the user
        has picked the label (then ``with_schema`` or ``from_file(..., label=...)``).
        ``source_name`` is how messages name the file (useful for bytes: pass the upload's file name).
        """
        max_bytes = MAX_FILE_BYTES if max_bytes is None else int(max_bytes)
        display = source_name or (name if isinstance(path_or_buffer, (bytes, bytearray, memoryview)) else None)
        raw, rows, source = _read_raw(path_or_buffer, max_bytes, display)
        return cls._make(
            raw, rows, source, label=label, id_column=id_column, name=name, missing=missing, types=types,
            numeric_tolerance=numeric_tolerance, max_columns=max_columns, validate=validate,
        )

    @classmethod
    def from_frame(
        cls, df: pd.DataFrame, label: str | None = None, id_column: str | None | bool = None,
        name: str | None = None, missing: str = "impute", *, types: Mapping[str, str] | None = None,
        max_columns: int | None = None, numeric_tolerance: float | None = None, validate: bool = True,
        source_name: str = "the frame",
    ) -> "CaseBase":
        if not isinstance(df, pd.DataFrame):
            raise CaseValidationError(f"from_frame needs a pandas DataFrame, got {type(df).__name__}")
        if len(df) == 0:
            raise CaseValidationError(f"{source_name} has no rows. Fix: give at least one case per row")
        source = {"name": source_name, "kind": "frame", "encoding": None, "delimiter": None,
                  "row_numbers": "1-based row positions"}
        return cls._make(
            df, np.arange(1, len(df) + 1), source, label=label, id_column=id_column, name=name or "cases",
            missing=missing, types=types, numeric_tolerance=numeric_tolerance, max_columns=max_columns,
            validate=validate,
        )

    @classmethod
    def from_parquet(cls, path_or_buffer: Any, schema: Mapping[str, Any] | None = None, name: str | None = None) -> "CaseBase":
        """Reload a stored version (``to_parquet_bytes`` + its ``schema``) with the same sha256.

        Without ``schema`` the one embedded in the Parquet metadata by ``to_parquet_bytes`` is used.
        """
        raw, rows, source = _read_raw(path_or_buffer, max(MAX_FILE_BYTES, 1 << 40))
        embedded = source.pop("embedded_schema", None)
        schema = schema if schema is not None else embedded
        if schema is None:
            raise CaseValidationError(
                f"{source['name']} carries no qcbr schema. Fix: pass the schema saved with it "
                f"(schema.json), or read it with CaseBase.from_file(..., label=...)"
            )
        schema = _check_schema(source["name"], schema)
        names = [c["name"] for c in schema["columns"]]
        missing_cols = [c for c in names if c not in raw.columns]
        if missing_cols:
            raise CaseValidationError(
                f"{source['name']} lacks columns its schema lists: {_names(missing_cols)}. Fix: use the schema "
                f"that was saved with this file"
            )
        return cls._make(
            raw[names], rows, source, label=schema["label"], id_column=schema["id_column"] or False,
            name=name or schema.get("name"), missing=schema.get("missing_policy", "impute"),
            types={c["name"]: c["type"] for c in schema["columns"]}, numeric_tolerance=None, max_columns=None,
            prior_imputed=schema.get("imputed"),
        )

    # immutability ------------------------------------------------------------------------
    def __setattr__(self, key, value):
        raise AttributeError("a CaseBase is immutable; make a new version with append() or with_schema()")

    def __delattr__(self, key):
        raise AttributeError("a CaseBase is immutable")

    def __repr__(self) -> str:
        sha = self._state["sha256"][:12] if self._state else "not validated"
        return f"<CaseBase {self._name!r} rows={len(self._raw)} columns={len(self._types)} label={self._label!r} sha256={sha}>"

    def __len__(self) -> int:
        return len(self._raw)

    # validation ----------------------------------------------------------------------------
    def _where(self) -> str:
        return self._source["name"]

    def _row_note(self) -> str:
        return f"({self._source['row_numbers']})"

    def validate(self) -> "CaseBase":
        """Check everything that needs the label; raise CaseValidationError at the first problem."""
        if self._state is None:
            object.__setattr__(self, "_state", self._compute())
            object.__setattr__(self, "_parsed", {})  # inference's parse is no longer needed
        return self

    @property
    def is_validated(self) -> bool:
        return self._state is not None

    def _compute(self) -> dict:
        where, columns, rows = self._where(), list(self._types), self._rows
        label, id_column = self._label, self._id_column
        if label is None:
            hints = [c for c in columns if c.strip().lower() in LABEL_HINTS]
            raise CaseValidationError(
                f"no label column given for {where}: name the column that holds each case's class "
                f"(label=...; CLI: --label COLUMN)"
                + (f"; likely: {_names(hints)}" if hints else "")
                + f". Columns: {_names(columns)}"
            )
        if label not in columns:
            hints = _suggest(label, columns)
            raise CaseValidationError(
                f"{where} has no column {_q(label)} to use as the label"
                + (f"; did you mean {_names(hints)}?" if hints else "")
                + f" Columns: {_names(columns)}. Fix: pass one of these as the label (CLI: --label COLUMN)"
            )
        if id_column is not None and id_column not in columns:
            hints = _suggest(id_column, columns)
            raise CaseValidationError(
                f"{where} has no column {_q(id_column)} to use as the id column"
                + (f"; did you mean {_names(hints)}?" if hints else "")
                + f" Columns: {_names(columns)}. Fix: pass one of these, or no id column (ids are then generated)"
            )
        if id_column == label:
            raise CaseValidationError(
                f"{where}: column {_q(label)} cannot be both the label and the id column. Fix: choose another id column or none"
            )
        features = [c for c, t in self._types.items() if t in FEATURE_TYPES]
        if not features:
            raise CaseValidationError(
                f"{where} has no feature columns besides the label {_q(label)}"
                + (f" and the id {_q(id_column)}" if id_column else "")
                + ". Fix: include the columns that describe each case"
            )
        out: dict[str, pd.Series] = {}
        report = {"missing": {}, "imputed": {}, "imputed_values": {}, "coerced": {}, "decimal_comma": [], "warnings": []}

        if id_column is not None:
            ids, id_missing = _text(self._raw[id_column])
            if id_missing.any():
                raise CaseValidationError(
                    f"id column {_q(id_column)} in {where} is empty in {int(id_missing.sum())} "
                    f"{_rows(rows[id_missing])} {self._row_note()}. Fix: give every case an id, or use no id column"
                )
            counts = pd.Series(ids).value_counts()
            repeated = counts[counts > 1]
            if len(repeated):
                parts = []
                for value in list(repeated.index)[:MAX_LISTED]:
                    parts.append(f"{_q(value)} ({_rows(rows[ids == value])})")
                more = len(repeated) - MAX_LISTED
                raise CaseValidationError(
                    f"id column {_q(id_column)} in {where} repeats {len(repeated)} "
                    f"{'value' if len(repeated) == 1 else 'values'}: {', '.join(parts)}"
                    + (f" and {more} more" if more > 0 else "")
                    + f" {self._row_note()}. Fix: make every id unique, or do not use {_q(id_column)} as the id column"
                )
            out[id_column] = pd.Series(list(ids), dtype="str")
            report["missing"][id_column] = 0

        labels, label_missing = _text(self._raw[label])
        if label_missing.any():
            raise CaseValidationError(
                f"label column {_q(label)} in {where} is empty in {int(label_missing.sum())} "
                f"{_rows(rows[label_missing])} {self._row_note()}. Fix: fill in the class of those cases or "
                f"delete the rows (labels are never imputed)"
            )
        y = _normalise_labels(labels)
        out[label] = y
        report["missing"][label] = 0

        missing_masks: dict[str, np.ndarray] = {}
        for c in features:
            kind = self._types[c]
            series = self._raw[c]
            if kind == "numeric":
                values, miss, bad, texts, comma = self._parsed.get(c) or _parse_numbers(
                    series, self._source.get("delimiter") not in (None, ",")
                )
                if comma:
                    report["decimal_comma"].append(c)
                what = "are not numbers"
            elif kind == "boolean":
                values, miss, bad, texts = _parse_booleans(series)
                what = "are not true/false (or yes/no, 1/0)"
            else:
                values, miss = _text(series)
                bad, texts = np.zeros(len(values), bool), []
                what = ""
            present = int((~miss).sum())
            if present == 0:
                raise CaseValidationError(
                    f"column {_q(c)} in {where} has no values at all. Fix: delete the column or fill it in"
                )
            n_bad = int(bad.sum())
            if n_bad and n_bad > self._tolerance * present:
                idx = np.flatnonzero(bad)
                shown = ", ".join(f"row {rows[i]} {_q(texts[i])}" for i in idx[:MAX_LISTED])
                more = n_bad - MAX_LISTED
                raise CaseValidationError(
                    f"column {_q(c)} in {where} is {kind} but {n_bad} of {present} values "
                    f"({100 * n_bad / present:.1f}%, over the {100 * self._tolerance:g}% tolerance) {what}: {shown}"
                    + (f" and {more} more" if more > 0 else "")
                    + f" {self._row_note()}. Fix: correct those cells, or declare {_q(c)} categorical "
                    f"(schema type 'categorical'; CLI: --type '{c}=categorical')"
                )
            if n_bad:
                idx = np.flatnonzero(bad)
                report["coerced"][c] = n_bad
                report["warnings"].append(
                    f"column {_q(c)}: {n_bad} {'value' if n_bad == 1 else 'values'} that {what} "
                    f"({', '.join(f'row {rows[i]} {_q(texts[i])}' for i in idx[:MAX_LISTED])}) treated as missing"
                )
            missing_masks[c] = miss | bad
            report["missing"][c] = int((miss | bad).sum())
            out[c] = (kind, values)

        total_missing = {c: int(m.sum()) for c, m in missing_masks.items() if m.any()}
        if total_missing and self._missing == "reject":
            parts = [f"{_q(c)} {n} ({_rows(rows[missing_masks[c]], 3)})" for c, n in total_missing.items()]
            raise CaseValidationError(
                f"{where} has missing values in {len(total_missing)} "
                f"{'column' if len(total_missing) == 1 else 'columns'} and the policy is missing='reject': "
                f"{'; '.join(parts[:10])}{' and more' if len(parts) > 10 else ''} {self._row_note()}. "
                f"Fix: fill in or delete those rows, or use missing='impute' (CLI: --missing impute)"
            )
        for c in features:
            kind, values = out[c]
            mask = missing_masks[c]
            if kind == "numeric":
                values = values.copy()
                if mask.any():
                    fill = float(np.median(values[~mask]))
                    values[mask] = fill
                    report["imputed"][c] = int(mask.sum())
                    report["imputed_values"][c] = fill
                out[c] = pd.Series(values, dtype="float64")
            else:
                values = values.copy()
                if mask.any():
                    fill = _mode(values[~mask])
                    values[mask] = fill
                    report["imputed"][c] = int(mask.sum())
                    report["imputed_values"][c] = fill
                out[c] = pd.Series(list(values), dtype=bool if kind == "boolean" else "str")
            if kind == "categorical":
                distinct = out[c].nunique()
                if distinct > HIGH_CARDINALITY and distinct > 0.5 * len(out[c]):
                    report["warnings"].append(
                        f"column {_q(c)} has {distinct} distinct values in {len(out[c])} cases: free text or an id? "
                        f"It will one-hot encode poorly; consider dropping it or making it the id column"
                    )
            if out[c].nunique() == 1:
                report["warnings"].append(f"column {_q(c)} has one value in every case; it cannot help tell cases apart")

        counts = y.value_counts()
        if len(counts) < 2:
            only = counts.index[0]
            raise CaseValidationError(
                f"label column {_q(label)} in {where} has only one class ({_q(only)}, {int(counts.iloc[0])} cases); "
                f"a classifier needs at least 2 classes. Fix: check that {_q(label)} is the right label column, "
                f"or add cases of the other classes"
            )
        singles = [k for k, n in counts.items() if n == 1]
        if singles:
            parts = [f"{_q(k)} ({_rows(rows[(y == k).to_numpy()])})" for k in singles[:MAX_LISTED]]
            raise CaseValidationError(
                f"label column {_q(label)} in {where} has {len(singles)} "
                f"{'class' if len(singles) == 1 else 'classes'} with only one case: {', '.join(parts)}"
                + (f" and {len(singles) - MAX_LISTED} more" if len(singles) > MAX_LISTED else "")
                + f" {self._row_note()}. Fix: every class needs at least 2 cases (one may be held out for "
                f"validation): add cases of that class, or delete the row"
            )

        frame = pd.DataFrame({c: out[c] for c in self._types})
        imputed = dict(self._prior_imputed)
        for c, n in report["imputed"].items():
            imputed[c] = imputed.get(c, 0) + n
        report["imputed"] = {c: n for c, n in imputed.items() if c in self._types and n}
        sha = canonical_sha256(frame, label, id_column, self._types)
        return {"frame": frame, "sha256": sha, "report": report}

    # accessors ---------------------------------------------------------------------------
    def _valid(self) -> dict:
        self.validate()
        return self._state

    @property
    def name(self) -> str:
        return self._name

    @property
    def label(self) -> str | None:
        return self._label

    @property
    def id_column(self) -> str | None:
        return self._id_column

    @property
    def columns(self) -> list[str]:
        """Column names in the user's order (available before validation)."""
        return list(self._types)

    @property
    def source(self) -> dict:
        return copy.deepcopy(self._source)

    @property
    def is_demo(self) -> bool:
        return self._source.get("kind") == "demo"

    @property
    def schema(self) -> dict:
        """A fresh, editable dict; give it back to ``with_schema`` to apply edits."""
        imputed = self._state["report"]["imputed"] if self._state else dict(self._prior_imputed)
        return {
            "label": self._label,
            "id_column": self._id_column,
            "columns": [{"name": c, "type": t} for c, t in self._types.items()],
            "missing_policy": self._missing,
            "imputed": dict(imputed),
        }

    @property
    def frame(self) -> pd.DataFrame:
        """The normalised cases (copy-on-write copy: editing it never changes the case base)."""
        return self._valid()["frame"].copy(deep=False)

    @property
    def features(self) -> pd.DataFrame:
        cols = [c for c, t in self._types.items() if t in FEATURE_TYPES]
        return self._valid()["frame"][cols].copy(deep=False)

    @property
    def feature_types(self) -> dict[str, str]:
        return {c: t for c, t in self._types.items() if t in FEATURE_TYPES}

    @property
    def y(self) -> pd.Series:
        return self._valid()["frame"][self._label].copy(deep=False)

    @property
    def classes(self) -> list:
        return sorted(self.y.unique().tolist(), key=lambda v: (str(type(v)), v))

    @property
    def case_ids(self) -> list[str]:
        """The id column's values, or stable generated ids ``case-0001``... by row position
        (appending rows never renumbers the existing ones)."""
        frame = self._valid()["frame"]
        if self._id_column is not None:
            return [str(v) for v in frame[self._id_column].tolist()]
        return [f"case-{i:04d}" for i in range(1, len(frame) + 1)]

    @property
    def sha256(self) -> str:
        return self._valid()["sha256"]

    # reports -----------------------------------------------------------------------------
    def summary(self) -> dict:
        """JSON-able facts for a person (and for the dataset record)."""
        state = self._valid()
        frame, report = state["frame"], state["report"]
        counts = frame[self._label].value_counts()
        classes = {str(k): int(v) for k, v in sorted(counts.items(), key=lambda kv: str(kv[0]))}
        source = {k: v for k, v in self._source.items() if k not in ("embedded_schema",)}
        return {
            "name": self._name,
            "sha256": state["sha256"],
            "rows": int(len(frame)),
            "columns": int(frame.shape[1]),
            "features": len(self.feature_types),
            "label": self._label,
            "id_column": self._id_column,
            "column_types": dict(self._types),
            "classes": classes,
            "n_classes": len(classes),
            "missing": dict(report["missing"]),
            "imputed": dict(report["imputed"]),
            "imputed_values": {c: (v if isinstance(v, (str, bool)) else float(v)) for c, v in report["imputed_values"].items()},
            "coerced": dict(report["coerced"]),
            "decimal_comma": list(report["decimal_comma"]),
            "missing_policy": self._missing,
            "warnings": list(report["warnings"]),
            "source": source,
            "demo": self.is_demo,
        }

    def bias_report(self, sensitive: str | None = None) -> dict:
        """Class balance, and with ``sensitive``: per-group label rates and disparate impact.

        Disparate impact of a class = lowest group rate of that class / highest group rate (the
        US EEOC "four-fifths rule" flags a ratio below 0.8). A numeric sensitive column with more
        than 10 distinct values is cut into quartile groups first.
        """
        frame = self._valid()["frame"]
        y = frame[self._label]
        counts = y.value_counts()
        n = len(y)
        class_counts = {str(k): int(v) for k, v in sorted(counts.items(), key=lambda kv: str(kv[0]))}
        report: dict[str, Any] = {
            "label": self._label,
            "rows": n,
            "class_counts": class_counts,
            "class_balance": {k: v / n for k, v in class_counts.items()},
            "imbalance_ratio": float(counts.max() / counts.min()),
            "majority_class": str(counts.idxmax()),
            "minority_class": str(counts.idxmin()),
            "sensitive": None,
        }
        if sensitive is None:
            return report
        columns = list(frame.columns)
        if sensitive not in columns:
            hints = _suggest(sensitive, columns)
            raise CaseValidationError(
                f"{self._where()} has no column {_q(sensitive)} to check for bias"
                + (f"; did you mean {_names(hints)}?" if hints else "")
                + f" Columns: {_names(columns)}"
            )
        if sensitive in (self._label, self._id_column):
            raise CaseValidationError(
                f"column {_q(sensitive)} is the {'label' if sensitive == self._label else 'id column'}; "
                f"pick a feature column (e.g. gender, age group) as the sensitive attribute"
            )
        col = frame[sensitive]
        binned = False
        if self._types[sensitive] == "numeric" and col.nunique() > 10:
            groups = pd.qcut(col, NUMERIC_SENSITIVE_BINS, duplicates="drop").astype(str)
            binned = True
        else:
            groups = col.astype(str)
        if groups.nunique() > MAX_SENSITIVE_GROUPS:
            raise CaseValidationError(
                f"sensitive column {_q(sensitive)} has {groups.nunique()} groups (limit {MAX_SENSITIVE_GROUPS}); "
                f"a bias report needs a few groups. Fix: pick a grouping column, or group the values first"
            )
        table = pd.crosstab(groups, y.astype(str))
        rates = table.div(table.sum(axis=1), axis=0)
        group_info = {
            str(g): {"count": int(table.loc[g].sum()), "label_rates": {str(k): float(rates.loc[g, k]) for k in rates.columns}}
            for g in table.index
        }
        impact = {}
        for k in rates.columns:
            r = rates[k]
            hi, lo = float(r.max()), float(r.min())
            ratio = lo / hi if hi > 0 else None
            impact[str(k)] = {
                "ratio": ratio,
                "min_group": str(r.idxmin()),
                "max_group": str(r.idxmax()),
                "four_fifths_ok": ratio is None or ratio >= 0.8,
            }
        report["sensitive"] = {
            "column": sensitive,
            "binned": binned,
            "groups": group_info,
            "disparate_impact": impact,
            "four_fifths_violations": [k for k, v in impact.items() if not v["four_fifths_ok"]],
            "small_groups": [g for g, info in group_info.items() if info["count"] < 30],
        }
        return report

    # new versions and persistence ----------------------------------------------------------
    def to_parquet_bytes(self) -> bytes:
        """The normalised frame as Parquet, with the schema embedded in the file metadata."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(self._valid()["frame"], preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[PARQUET_SCHEMA_KEY] = json.dumps({**self.schema, "name": self._name}).encode("utf-8")
        table = table.replace_schema_metadata(meta)
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        return buffer.getvalue()

    def with_schema(self, schema: Mapping[str, Any]) -> "CaseBase":
        """A new, validated case base with the edited schema applied to the same data.

        ``label``/``id_column`` in the schema decide those roles; columns left out of
        ``schema["columns"]`` are dropped; ``imputed`` is recomputed, not read.
        """
        schema = _check_schema(self._where(), schema, allow_no_label=False)
        names = [c["name"] for c in schema["columns"]]
        unknown = [c for c in names if c not in self._types]
        if unknown:
            hint = _suggest(unknown[0], list(self._types))
            raise CaseValidationError(
                f"the schema names columns that {self._where()} does not have: {_names(unknown)}"
                + (f" (did you mean {_names(hint)}?)" if hint else "")
                + f". Columns: {_names(list(self._types))}"
            )
        label, id_column = schema["label"], schema["id_column"]
        types = {}
        for c in schema["columns"]:
            if c["name"] in (label, id_column):
                continue
            if c["type"] in ("label", "id"):  # a former label/id: infer a feature type again
                continue
            types[c["name"]] = c["type"]
        for role, col in (("label", label), ("id column", id_column)):
            if col is not None and col not in names:
                raise CaseValidationError(
                    f"the schema's {role} {_q(col)} is not among its columns. Fix: keep {_q(col)} in schema['columns']"
                )
        return CaseBase._make(
            self._raw[names], self._rows, self._source, label=label, id_column=id_column or False,
            name=self._name, missing=schema.get("missing_policy", self._missing), types=types,
            numeric_tolerance=self._tolerance, max_columns=None, prior_imputed=self._prior_imputed,
        )

    def append(self, frame: pd.DataFrame | "CaseBase") -> "CaseBase":
        """A new version: these cases plus ``frame``'s, validated against the same schema."""
        state = self._valid()
        new = frame.frame if isinstance(frame, CaseBase) else frame
        if not isinstance(new, pd.DataFrame):
            raise CaseValidationError(f"append needs a DataFrame or CaseBase, got {type(frame).__name__}")
        new = new.copy(deep=False)
        new.columns = [str(c).strip() for c in new.columns]
        expected = list(self._types)
        lacking = [c for c in expected if c not in new.columns]
        extra = [c for c in new.columns if c not in expected]
        if lacking or extra:
            raise CaseValidationError(
                f"the cases to append do not match the schema of {self._name!r}: "
                + (f"missing columns {_names(lacking)}" if lacking else "")
                + ("; " if lacking and extra else "")
                + (f"unexpected columns {_names(extra)}" if extra else "")
                + f". Fix: give exactly the columns {_names(expected)}"
            )
        if len(new) == 0:
            raise CaseValidationError("there are no cases to append (the frame is empty)")
        old = state["frame"].astype(object)
        combined = pd.concat([old, new[expected].astype(object)], ignore_index=True)
        n_old = len(old)
        source = dict(self._source)
        source.pop("embedded_schema", None)
        source.update(
            kind="append",
            name=f"{self._name!r} + appended cases",
            row_numbers=f"1-based positions: rows 1-{n_old} are the existing cases, {n_old + 1}-{n_old + len(new)} the appended ones",
        )
        types = {c: t for c, t in self._types.items() if t in FEATURE_TYPES}
        return CaseBase._make(
            combined, np.arange(1, len(combined) + 1), source, label=self._label,
            id_column=self._id_column or False, name=self._name, missing=self._missing, types=types,
            numeric_tolerance=self._tolerance, max_columns=None, prior_imputed=state["report"]["imputed"],
        )


def _check_schema(where: str, schema: Mapping[str, Any], allow_no_label: bool = False) -> dict:
    """Validate the shape of a (possibly hand-edited) schema dict."""
    if not isinstance(schema, Mapping):
        raise CaseValidationError(f"a schema must be a dict, got {type(schema).__name__}")
    cols = schema.get("columns")
    if not isinstance(cols, list) or not cols:
        raise CaseValidationError(
            "the schema needs 'columns': a list of {'name': ..., 'type': ...} entries (see CaseBase.schema)"
        )
    seen = set()
    for i, entry in enumerate(cols, start=1):
        if not isinstance(entry, Mapping) or "name" not in entry or "type" not in entry:
            raise CaseValidationError(f"schema column entry {i} must be a dict with 'name' and 'type', got {entry!r}")
        if entry["type"] not in COLUMN_TYPES:
            raise CaseValidationError(
                f"schema column {_q(entry['name'])} has type {entry['type']!r}. Fix: use one of "
                f"{', '.join(FEATURE_TYPES)} (or id / label)"
            )
        if entry["name"] in seen:
            raise CaseValidationError(f"the schema lists column {_q(entry['name'])} twice. Fix: keep one entry")
        seen.add(entry["name"])
    label = schema.get("label")
    if label is None and not allow_no_label:
        raise CaseValidationError(
            f"the schema for {where} names no label. Fix: set schema['label'] to the column holding each case's class"
        )
    policy = schema.get("missing_policy", "impute")
    if policy not in MISSING_POLICIES:
        raise CaseValidationError(f"schema missing_policy {policy!r} is not 'impute' or 'reject'")
    return {
        "label": label, "id_column": schema.get("id_column"), "columns": [dict(c) for c in cols],
        "missing_policy": policy, "imputed": dict(schema.get("imputed") or {}), "name": schema.get("name"),
    }


_NAME_CHARS = re.compile(r"[^a-z0-9_-]+")


def sanitize_name(text: str, default: str = "cases") -> str:
    """A dataset name safe in S3 keys, MLflow and SageMaker names: [a-z0-9-_], 1-63 chars."""
    # fold accents and ligatures to ASCII first, so "Größen" names "grossen", not "gr-en"
    folded = unicodedata.normalize("NFKD", str(text).strip().casefold())
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    name = _NAME_CHARS.sub("-", folded).strip("-_")
    name = re.sub(r"-{2,}", "-", name)[:63].strip("-_")
    return name or default


def _default_name(where: str) -> str:
    if where in ("the uploaded data", "the uploaded file", "the frame"):
        return "cases"
    return sanitize_name(Path(where).stem)


def demo_case_base(name: str = "iris") -> CaseBase:
    """A DEMO case base from a dataset bundled with scikit-learn (no download), with case ids.

    Why: the dashboard and ``qcbr demo`` need real cases on a fresh machine; the summary marks it
    ``demo: True`` and the name starts with ``demo-`` so it is never mistaken for business data.
    """
    if name not in DEMO_DATASETS:
        raise CaseValidationError(f"no demo dataset {name!r}; choose one of {', '.join(DEMO_DATASETS)}")
    import sklearn.datasets

    loader, label, description = DEMO_DATASETS[name]
    bunch = getattr(sklearn.datasets, loader)(as_frame=True)
    features = bunch.data.reset_index(drop=True)
    df = pd.DataFrame({"case_id": [f"{name}-{i:04d}" for i in range(1, len(features) + 1)]})
    df = pd.concat([df, features], axis=1)
    df[label] = [str(bunch.target_names[t]) for t in bunch.target]
    cb = CaseBase.from_frame(df, label=label, id_column="case_id", name=f"demo-{name}", source_name=f"demo:{name}")
    source = dict(cb._source)
    source.update(kind="demo", description=f"DEMO DATA (scikit-learn's bundled {name} dataset): {description}")
    object.__setattr__(cb, "_source", source)
    return cb


__all__ = [
    "CaseBase", "safe_csv", "demo_case_base", "sanitize_name", "sniff_delimiter", "canonical_sha256",
    "MAX_FILE_BYTES", "MAX_COLUMNS", "NUMERIC_TOLERANCE", "FEATURE_TYPES", "COLUMN_TYPES", "MISSING_POLICIES",
]
