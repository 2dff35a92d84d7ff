"""The batch-prediction reader takes what the Cases page takes (European spreadsheet exports too)."""
from __future__ import annotations

import pytest

from dashboard.batch import BatchFileError, read_batch_csv


def test_a_windows_1252_semicolon_file_with_decimal_commas_reads_as_numbers():
    data = "Größe;Gewicht;Farbe\n1,50;60,5;grün\n1,62;71,0;weiß\n".encode("cp1252")
    frame = read_batch_csv(data, "neu.csv")
    assert list(frame.columns) == ["Größe", "Gewicht", "Farbe"]
    assert frame["Größe"].tolist() == [1.5, 1.62] and frame["Gewicht"].tolist() == [60.5, 71.0]
    assert frame["Farbe"].tolist() == ["grün", "weiß"]


def test_utf8_with_bom_and_commas_is_the_plain_case():
    frame = read_batch_csv("\ufeffa,b,c\n1.5,x,3\n2.5,y,4\n".encode("utf-8"), "x.csv")
    assert list(frame.columns) == ["a", "b", "c"] and frame["a"].tolist() == [1.5, 2.5]


@pytest.mark.parametrize("data, words", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file"),
    (b"   \n", "empty"),
    (b'a,b\n"1,2\n', "could not be read as CSV"),
])
def test_unreadable_files_say_why(data, words):
    with pytest.raises(BatchFileError, match=words):
        read_batch_csv(data, "bad.csv")
