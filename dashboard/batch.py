"""Reading the CSV a user uploads for batch predictions.

It must accept what the Cases page accepts: files saved by a spreadsheet in a European locale
(Windows-1252 text, ';' between fields, decimal commas), or the same person can upload their cases
but not ask the model about new ones.
"""
from __future__ import annotations

import io

import pandas as pd


class BatchFileError(ValueError):
    """The uploaded file is not a table we can read; the message says why and what to do."""


def read_batch_csv(data: bytes, name: str) -> pd.DataFrame:
    """The table in ``data``: UTF-8 (with or without BOM) or Windows-1252 text, delimiter , ; tab or |."""
    from qcbr.cases import sniff_delimiter

    if b"\x00" in data[:65536]:
        raise BatchFileError(f"{name} is a binary file, not CSV text. Save the table as CSV and upload that.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")
    if not text.strip():
        raise BatchFileError(f"{name} is empty. Upload a CSV with a header row and one case per row.")
    sep = sniff_delimiter(text)
    try:
        # ';' is the list separator where ',' is the decimal mark (Excel in most of Europe)
        return pd.read_csv(io.StringIO(text), sep=sep, decimal="," if sep == ";" else ".")
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise BatchFileError(f"{name} could not be read as CSV ({' '.join(str(exc).split())}). Check that every "
                             f"row has as many fields as the header, and that quotes are closed.") from None
