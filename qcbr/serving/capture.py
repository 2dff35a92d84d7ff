"""SageMaker-style data capture: every invocation appended as one JSON line, off the request path.

Model Monitor (ours and SageMaker's) reads captured traffic from
``<capture_root>/<endpoint>/<variant>/yyyy/mm/dd/hh/*.jsonl``, one record per line::

    {"captureData": {"endpointInput": {"observedContentType", "mode": "INPUT", "data", "encoding"},
                     "endpointOutput": {"observedContentType", "mode": "OUTPUT", "data", "encoding"}},
     "eventMetadata": {"eventId", "inferenceId"?, "inferenceTime"}, "eventVersion": "0"}

Why it is built this way: the request handler only appends a tuple to a list (microseconds); a
background thread serialises and writes the buffer every ``flush_interval`` seconds as whole lines
in one ``write`` on a file opened with ``O_APPEND``. Each process writes its own file per hour
(the name holds the pid and a random suffix), so several server processes never interleave, and
a process stopped with SIGTERM flushes everything (``close()`` runs in the server's shutdown).
Only a SIGKILL that lands inside a ``write`` can leave a torn last line, and only at the end of
that dead process's own file; and a reader may look while a write is in progress. So readers
skip a last line without a newline: ``read_capture_file`` does.
"""
from __future__ import annotations

import base64
import os
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from qcbr.serving.payload import dumps_json

CAPTURE_EVENT_VERSION = "0"


def capture_record(
    input_data: bytes,
    input_content_type: str,
    input_encoding: str,
    output_data: bytes,
    output_content_type: str,
    inference_id: str | None,
    when: datetime,
    event_id: str | None = None,
) -> dict[str, Any]:
    """One capture line as a dict, in SageMaker's data-capture shape."""
    metadata: dict[str, Any] = {
        "eventId": event_id or str(uuid.uuid4()),
        "inferenceTime": when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
    }
    if inference_id:
        metadata["inferenceId"] = inference_id
    return {
        "captureData": {
            "endpointInput": _part(input_data, input_content_type, input_encoding, "INPUT"),
            "endpointOutput": _part(output_data, output_content_type, "JSON", "OUTPUT"),
        },
        "eventMetadata": metadata,
        "eventVersion": CAPTURE_EVENT_VERSION,
    }


def _part(data: bytes, content_type: str, encoding: str, mode: str) -> dict[str, str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(data).decode("ascii"), "BASE64"
    return {"observedContentType": content_type, "mode": mode, "data": text, "encoding": encoding}


def read_capture_file(path: str | os.PathLike) -> list[dict]:
    """The complete records of one capture file (an unterminated last line is skipped)."""
    import json

    data = Path(path).read_bytes()
    end = data.rfind(b"\n")
    if end < 0:
        return []
    return [json.loads(line) for line in data[: end + 1].splitlines() if line.strip()]


class CaptureWriter:
    """Buffered, thread-flushed appender for one endpoint variant in one process."""

    def __init__(
        self,
        root: str | os.PathLike,
        endpoint: str,
        variant: str = "AllTraffic",
        flush_interval: float = 0.2,
        max_buffer: int = 2000,
    ):
        self.base = Path(root) / endpoint / variant
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self._suffix = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._buffer: list[tuple] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._io_lock = threading.Lock()  # one flush at a time (thread vs. close())
        self._closed = False
        self._files: dict[str, int] = {}  # hour folder -> fd
        self.written = 0
        self.errors = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"capture-{endpoint}", daemon=True)
        self._thread.start()

    def record(
        self,
        input_data: bytes,
        input_content_type: str,
        input_encoding: str,
        output_data: bytes,
        output_content_type: str = "application/json",
        inference_id: str | None = None,
        when: datetime | None = None,
    ) -> None:
        """Queue one invocation; returns at once (the writer thread does the work)."""
        item = (input_data, input_content_type, input_encoding, output_data, output_content_type,
                inference_id, when or datetime.now(timezone.utc))
        with self._lock:
            if self._closed:
                raise RuntimeError("capture writer is closed")
            self._buffer.append(item)
            if len(self._buffer) >= self.max_buffer:
                self._wake.notify()

    def flush(self) -> None:
        with self._lock:
            items, self._buffer = self._buffer, []
        if items:
            self._write(items)

    def close(self) -> None:
        """Flush everything queued and release the files; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=10)
        self.flush()
        with self._io_lock:
            for fd in self._files.values():
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            self._files.clear()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._closed and len(self._buffer) < self.max_buffer:
                    self._wake.wait(self.flush_interval)
                closed = self._closed
            self.flush()
            if closed:
                return

    def _write(self, items: list[tuple]) -> None:
        by_hour: dict[str, list[bytes]] = {}
        for data, ctype, enc, out, out_ctype, inference_id, when in items:
            rec = capture_record(data, ctype, enc, out, out_ctype, inference_id, when)
            hour = when.astimezone(timezone.utc).strftime("%Y/%m/%d/%H")
            by_hour.setdefault(hour, []).append(dumps_json(rec) + b"\n")
        with self._io_lock:
            for hour, lines in by_hour.items():
                try:
                    fd = self._file_for(hour)
                    buf = b"".join(lines)
                    view = memoryview(buf)
                    while view:
                        n = os.write(fd, view)
                        view = view[n:]
                    self.written += len(lines)
                except OSError as exc:  # a full disk must not take the endpoint down
                    self.errors += len(lines)
                    self.last_error = f"{type(exc).__name__}: {exc}"
            # keep at most the newest hour open; earlier hours are finished
            newest = max(self._files) if self._files else None
            for hour in [h for h in self._files if h != newest]:
                os.close(self._files.pop(hour))

    def _file_for(self, hour: str) -> int:
        fd = self._files.get(hour)
        if fd is None:
            folder = self.base / hour
            folder.mkdir(parents=True, exist_ok=True)
            stamp = datetime.now(timezone.utc).strftime("%M-%S-%f")[:-3]
            path = folder / f"{stamp}-{self._suffix}.jsonl"
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._files[hour] = fd
        return fd
