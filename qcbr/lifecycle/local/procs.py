"""Detached processes: start them so they outlive their starter, find them again, stop them.

Training supervisors, inference servers and the gateway must survive the CLI command or the
dashboard session that started them, and must not linger as zombies of a long-lived parent.
So they are started through a tiny launcher process that starts the real one in a new session
(its own process group) and exits at once: the real process is re-parented to init, which reaps
it. Liveness is checked by pid *and* command line, so a recycled pid is never mistaken for ours.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

# Runs in a bare interpreter (no qcbr import): start argv detached, print its pid, exit.
_LAUNCHER = r"""
import json, os, subprocess, sys
spec = json.loads(sys.stdin.read())
log = open(spec["log"], "ab", buffering=0)
proc = subprocess.Popen(spec["argv"], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                        cwd=spec["cwd"], env=spec["env"], start_new_session=True, close_fds=True)
sys.stdout.write(str(proc.pid))
sys.stdout.flush()
os._exit(0)
"""


def spawn_detached(argv: list[str], log_path: Path, env: dict[str, str] | None = None,
                   cwd: str | os.PathLike | None = None) -> int:
    """Start ``argv`` in its own session with output appended to ``log_path``; return its pid."""
    import json

    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [str(a) for a in argv],
        "log": str(log_path),
        "cwd": str(cwd or os.getcwd()),
        "env": dict(os.environ if env is None else env),
    }
    done = subprocess.run(
        [sys.executable, "-S", "-c", _LAUNCHER], input=json.dumps(spec).encode(),
        capture_output=True, timeout=60, check=False,
    )
    if done.returncode != 0 or not done.stdout.strip().isdigit():
        raise RuntimeError(
            f"could not start {' '.join(spec['argv'][:4])}: {done.stderr.decode(errors='replace').strip()[-500:]}"
        )
    return int(done.stdout)


def _stat_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_alive(pid: int | None, *expect: str) -> bool:
    """True if ``pid`` runs (not a zombie) and its command line contains every ``expect`` string."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    state = _stat_state(pid)
    if state is None:
        # no /proc (not Linux): trust kill(0)
        return not Path("/proc").is_dir()
    if state in ("Z", "X"):
        return False
    if expect:
        args = cmdline(pid)
        joined = "\0".join(args)
        return all(e in joined for e in expect)
    return True


def signal_group(pid: int, sig: int) -> bool:
    """Send ``sig`` to the process group led by ``pid`` (falling back to the process itself)."""
    try:
        os.killpg(pid, sig)
        return True
    except ProcessLookupError:
        pass
    except PermissionError:
        return False
    try:
        os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def stop_group(pid: int | None, grace: float = 10.0, *expect: str) -> None:
    """SIGTERM the group, wait up to ``grace`` seconds for its leader to end, then SIGKILL the group."""
    if not pid or not is_alive(pid, *expect):
        return
    signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not is_alive(pid):
            break
        time.sleep(0.05)
    signal_group(pid, signal.SIGKILL)


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now (the server binds it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout: float = 1.0) -> tuple[int, bytes]:
    """GET without proxies (a corporate HTTP_PROXY must never see 127.0.0.1 traffic)."""
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def ping(url: str, timeout: float = 1.0) -> bool:
    try:
        status, _ = http_get(url.rstrip("/") + "/ping", timeout=timeout)
    except OSError:
        return False
    return status == 200


def wait_ping(url: str, timeout: float, pid: int | None = None, *expect: str) -> bool:
    """Poll ``url``/ping until 200, the process dies, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while time.monotonic() < deadline:
        if ping(url, timeout=min(2.0, max(0.2, deadline - time.monotonic()))):
            return True
        if pid is not None and not is_alive(pid, *expect):
            return False
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    return False


def log_tail(path: Path, max_bytes: int = 8000, max_lines: int = 60) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except FileNotFoundError:
        return ""
    lines = data.decode(errors="replace").splitlines()
    if size > max_bytes and lines:
        lines = lines[1:]  # first line is likely cut
    return "\n".join(lines[-max_lines:])
