"""``qcbr cases validate|upload FILE --label COL``: check a case base, then store it as a dataset.

pandas and the lifecycle load only when a command runs, so ``qcbr --help`` stays fast.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from qcbr.cli import print_json

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
_TYPES = ("numeric", "categorical", "boolean")


def _dataset_name(text: str) -> str:
    if not _NAME_RE.match(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a dataset name: use 1-63 letters, digits, '-' or '_', starting with a letter or digit"
        )
    return text


def _type_override(text: str) -> tuple[str, str]:
    column, sep, kind = text.rpartition("=")
    if not sep or not column or kind not in _TYPES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not COLUMN=TYPE with TYPE one of {', '.join(_TYPES)} (e.g. --type zip=categorical)"
        )
    return column, kind


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="CSV (delimiter , ; tab or |) or Parquet file")
    p.add_argument("--label", required=True, metavar="COL", help="the column holding each case's class")
    p.add_argument("--id-column", metavar="C", default=None, help="column of unique case ids (default: a unique 'id'/'case_id' column, else generated)")
    p.add_argument("--missing", choices=("impute", "reject"), default="impute",
                   help="missing values: impute (median / most frequent; default) or reject")
    p.add_argument("--type", dest="types", action="append", type=_type_override, default=[], metavar="COL=TYPE",
                   help="override an inferred column type (numeric, categorical, boolean); repeatable")
    p.add_argument("--json", action="store_true", help="print JSON")


def register(subparsers) -> None:
    p = subparsers.add_parser("cases", help="validate and upload case bases",
                              description="Validate a case base file, or upload it as an immutable dataset version.")
    sub = p.add_subparsers(dest="cases_command", metavar="ACTION", required=True)

    v = sub.add_parser("validate", help="check a file and print its summary (rows, columns, classes, sha256)")
    _add_common(v)
    v.set_defaults(func=cmd_validate)

    u = sub.add_parser("upload", help="validate a file and store it as a dataset version")
    _add_common(u)
    u.add_argument("--name", type=_dataset_name, default=None, metavar="N",
                   help="dataset name (default: the file name without extension, sanitised)")
    u.set_defaults(func=cmd_upload)


def _load(args):
    from qcbr.cases import CaseBase, sanitize_name

    name = getattr(args, "name", None) or sanitize_name(Path(args.file).stem)
    return CaseBase.from_file(
        args.file, label=args.label, id_column=args.id_column, name=name, missing=args.missing,
        types=dict(args.types) or None,
    )


def _print_summary(s: dict, out=None) -> None:
    classes = ", ".join(f"{k} {v}" for k, v in s["classes"].items())
    src = s["source"]
    fmt = src.get("kind", "")
    if fmt == "csv":
        delim = "tab" if src["delimiter"] == "\t" else repr(src["delimiter"])
        fmt = f"csv, delimiter {delim}, {src['encoding']}"
    lines = [
        f"ok: {src.get('name')} ({fmt})",
        f"  rows:      {s['rows']}",
        f"  columns:   {s['columns']} ({s['features']} features; label {s['label']!r}"
        + (f"; id column {s['id_column']!r})" if s["id_column"] else "; ids generated)"),
        f"  classes:   {s['n_classes']} ({classes})",
        "  types:     " + ", ".join(f"{c}={t}" for c, t in s["column_types"].items()),
    ]
    if s["imputed"]:
        lines.append("  imputed:   " + ", ".join(f"{c} {n}" for c, n in s["imputed"].items()))
    for w in s["warnings"]:
        lines.append(f"  warning:   {w}")
    lines.append(f"  sha256:    {s['sha256']}")
    print("\n".join(lines), file=out or sys.stdout)  # looked up now: a default would pin the stdout of import time


def cmd_validate(args) -> int:
    case_base = _load(args)
    summary = case_base.summary()
    if args.json:
        print_json(summary)
    else:
        _print_summary(summary)
    return 0


def cmd_upload(args) -> int:
    from qcbr.cli import current_actor
    from qcbr.lifecycle import get_backend

    case_base = _load(args)
    record = get_backend().upload_dataset(current_actor(), case_base, case_base.name)
    if args.json:
        print_json(record)
        return 0
    state = "uploaded" if record.get("Created") else "already present (identical content), unchanged"
    print(f"{state}: dataset {record['DatasetName']!r} version {record['Sha256']}")
    print(f"  rows: {record['Rows']}, label: {record['Label']!r}, id column: {record['IdColumn']!r}")
    print(f"  stored at: {record['S3Uri']}")
    print(f"  created: {record['CreationTime']} by {record['CreatedBy']}")
    return 0
