"""Data capture: SageMaker's JSONL shape, hour folders, whole lines under threads, processes and SIGKILL."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from qcbr.serving.capture import CaptureWriter, read_capture_file

ROOT = Path(__file__).resolve().parents[1]


def _lines(root: Path) -> list[tuple[Path, bytes]]:
    out = []
    for path in sorted(root.rglob("*.jsonl")):
        data = path.read_bytes()
        assert data == b"" or data.endswith(b"\n"), f"{path} ends mid-line"
        out += [(path, line) for line in data.splitlines()]
    return out


def test_record_shape_and_path(tmp_path):
    w = CaptureWriter(tmp_path, "churn-staging", "AllTraffic", flush_interval=0.05)
    when = datetime(2024, 3, 5, 7, 59, 58, 123000, tzinfo=timezone.utc)
    w.record(b'{"instances": [[1, 2]]}', "application/json", "JSON", b'{"predictions": []}',
             inference_id="abc-1", when=when)
    w.record(b"1,2\n", "text/csv", "CSV", b'{"predictions": []}', when=when)
    w.close()
    lines = _lines(tmp_path)
    assert len(lines) == 2
    path = lines[0][0]
    rel = path.relative_to(tmp_path).as_posix()
    assert re.fullmatch(r"churn-staging/AllTraffic/2024/03/05/07/\d\d-\d\d-\d{3}-\d+-[0-9a-f]{8}\.jsonl", rel), rel
    first, second = (json.loads(line) for _, line in lines)
    assert first["eventVersion"] == "0"
    assert first["captureData"]["endpointInput"] == {
        "observedContentType": "application/json", "mode": "INPUT",
        "data": '{"instances": [[1, 2]]}', "encoding": "JSON"}
    assert first["captureData"]["endpointOutput"] == {
        "observedContentType": "application/json", "mode": "OUTPUT",
        "data": '{"predictions": []}', "encoding": "JSON"}
    assert first["eventMetadata"]["inferenceId"] == "abc-1"
    assert first["eventMetadata"]["inferenceTime"] == "2024-03-05T07:59:58.123Z"
    assert re.fullmatch(r"[0-9a-f-]{36}", first["eventMetadata"]["eventId"])
    assert second["captureData"]["endpointInput"]["encoding"] == "CSV"
    assert "inferenceId" not in second["eventMetadata"]
    assert first["eventMetadata"]["eventId"] != second["eventMetadata"]["eventId"]


def test_hours_go_to_their_own_folders(tmp_path):
    w = CaptureWriter(tmp_path, "e", flush_interval=10)
    for hour in (22, 23):
        w.record(b"1\n", "text/csv", "CSV", b"{}", when=datetime(2024, 12, 31, hour, 1, tzinfo=timezone.utc))
    w.record(b"1\n", "text/csv", "CSV", b"{}", when=datetime(2025, 1, 1, 0, 0, tzinfo=timezone.utc))
    w.close()
    folders = sorted(p.parent.relative_to(tmp_path).as_posix() for p, _ in _lines(tmp_path))
    assert folders == ["e/AllTraffic/2024/12/31/22", "e/AllTraffic/2024/12/31/23", "e/AllTraffic/2025/01/01/00"]


def test_flushes_in_the_background_without_close(tmp_path):
    w = CaptureWriter(tmp_path, "e", flush_interval=0.05)
    w.record(b"1\n", "text/csv", "CSV", b"{}")
    deadline = time.monotonic() + 5
    while not _lines(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(_lines(tmp_path)) == 1
    w.close()
    w.close()  # idempotent


def test_many_threads_every_record_once(tmp_path):
    w = CaptureWriter(tmp_path, "e", flush_interval=0.01, max_buffer=50)

    def work(t):
        for i in range(250):
            w.record(json.dumps({"t": t, "i": i}).encode(), "application/json", "JSON", b"{}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    seen = sorted((d["t"], d["i"]) for d in
                  (json.loads(json.loads(line)["captureData"]["endpointInput"]["data"]) for _, line in _lines(tmp_path)))
    assert seen == [(t, i) for t in range(8) for i in range(250)]
    assert w.written == 2000 and w.errors == 0


WRITER = textwrap.dedent("""
    import sys, time
    from qcbr.serving.capture import CaptureWriter, read_capture_file
    w = CaptureWriter(sys.argv[1], "e", flush_interval=0.005)
    n = int(sys.argv[2])
    pad = b"x" * 3000
    print("ready", flush=True)
    i = 0
    while n < 0 or i < n:
        w.record(b'{"i": %d, "pad": "%s"}' % (i, pad), "application/json", "JSON", b"{}")
        i += 1
        if i % 200 == 0:
            time.sleep(0.001)
    w.close()
""")


def _spawn(tmp_path, n):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(n)], env=env,
                            stdout=subprocess.PIPE, cwd=ROOT)


def test_two_processes_write_separate_files_of_whole_lines(tmp_path):
    procs = [_spawn(tmp_path, 500) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=60) == 0
    lines = _lines(tmp_path)
    assert len(lines) == 1000
    assert len({path for path, _ in lines}) == 2
    for _, line in lines:
        json.loads(line)


def test_sigkill_loses_at_most_a_torn_tail(tmp_path):
    proc = _spawn(tmp_path, -1)
    assert proc.stdout.readline().strip() == b"ready"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and sum(p.stat().st_size for p in tmp_path.rglob("*.jsonl")) < 2_000_000:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    files = list(tmp_path.rglob("*.jsonl"))
    assert len(files) == 1
    raw = files[0].read_bytes()
    records = read_capture_file(files[0])
    assert len(records) > 100
    # only the bytes after the last newline (a write SIGKILL cut short) can be incomplete
    assert raw.count(b"\n") == len(records)
    ids = [json.loads(r["captureData"]["endpointInput"]["data"])["i"] for r in records]
    assert ids == list(range(len(ids)))  # in order, nothing lost or torn before the last flush
