"""The CLI with files and pipes a user really has: a Windows/Latin-1 CSV, a binary file, `| head`."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qcbr.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("content, words", [
    ("Größe;Gewicht\n1,5;60,2\n".encode("cp1252"), "is not UTF-8 text (byte 0xf6 at offset 2"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is a binary file, not CSV text"),
])
def test_predict_with_a_csv_the_endpoint_cannot_read_is_one_line_not_a_traceback(
        capsys, qcbr_home, tmp_path, content, words):
    path = tmp_path / "new.csv"
    path.write_bytes(content)
    code, out, err = run(capsys, "predict", "--endpoint", "churn-staging", "--csv", path)
    assert code == 1 and out == ""
    assert err.startswith(f"qcbr: error: {path} {words}") and "Fix: " in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_reader_that_goes_away_ends_the_command_quietly(qcbr_home, tmp_path):
    path = tmp_path / "cases.csv"
    path.write_text("x,y,label\n" + "".join(f"{i},{i % 7},{'ab'[i % 2]}\n" for i in range(40)))
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `qcbr ... | head -0`: nobody reads what the command prints
    try:
        done = subprocess.run([sys.executable, "-m", "qcbr", "cases", "validate", str(path), "--label", "label"],
                              stdout=write_end, stderr=subprocess.PIPE, cwd=REPO_ROOT, timeout=60,
                              env={**os.environ, "QCBR_HOME": str(qcbr_home)})
    finally:
        os.close(write_end)
    assert done.stderr.decode() == ""
    assert done.returncode == 141  # 128 + SIGPIPE, what `set -o pipefail` sees from other tools
