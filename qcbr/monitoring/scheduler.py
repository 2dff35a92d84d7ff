"""The local monitoring scheduler: ``python -m qcbr.monitoring.scheduler --home H --every-minutes M``.

On AWS an EventBridge schedule drives the same job; locally this process does. It wakes every
``M`` minutes, runs the monitoring job for each endpoint whose schedule is due, applies the
endpoint's automated-adjustment policy to the result, and registers models of finished automated
retrains. The backend manages it through ``start_scheduler`` / ``scheduler_status`` /
``stop_scheduler`` (pid file ``QCBR_HOME/monitoring/scheduler.pid``; the process holds
``scheduler.lock`` for its whole life, so two schedulers never run on one home and a stale pid
file is harmless).

Schedules: ``QCBR_HOME/monitoring/schedules.json`` = ``{"endpoints": {name: {"every_minutes",
"window_minutes" (null: everything since the previous run), "enabled", "updated_by",
"updated_at"}}}``. Run times per endpoint live apart, in ``scheduler_state.json``, so editing a
schedule never races the scheduler's bookkeeping.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import traceback
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from qcbr.errors import QCBRError
from qcbr.roles import OPERATOR, Actor, require

MODULE = "qcbr.monitoring.scheduler"


def _dir(home: str | os.PathLike) -> Path:
    return Path(home).expanduser().resolve() / "monitoring"


def paths(home: str | os.PathLike) -> dict[str, Path]:
    d = _dir(home)
    return {"schedules": d / "schedules.json", "state": d / "scheduler_state.json", "pid": d / "scheduler.pid",
            "lock": d / "scheduler.lock", "edit_lock": d / "schedules.lock", "log": d / "scheduler.log"}


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _log(message: str) -> None:
    print(f"{_now().isoformat(timespec='seconds')} {message}", flush=True)


# -- schedules ------------------------------------------------------------------------------------

def load_schedules(home: str | os.PathLike) -> dict[str, dict]:
    from qcbr.storage import read_json

    try:
        doc = read_json(paths(home)["schedules"])
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise QCBRError(f"{paths(home)['schedules']} is not valid JSON ({exc}); fix or delete it") from None
    return dict((doc or {}).get("endpoints") or {})


def set_schedule(actor: Actor, home: str | os.PathLike, endpoint: str, every_minutes: float = 60.0,
                 window_minutes: float | None = None, enabled: bool = True) -> dict:
    """Monitor ``endpoint`` every ``every_minutes`` (over the last ``window_minutes``, or since the previous run)."""
    from qcbr.lifecycle.local.state import update_json

    require(actor, "set_monitoring_policy")
    for name, value in (("every_minutes", every_minutes), ("window_minutes", window_minutes)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise QCBRError(f"{name} must be a positive number of minutes, got {value!r}")
    entry = {"every_minutes": float(every_minutes), "window_minutes": None if window_minutes is None else float(window_minutes),
             "enabled": bool(enabled), "updated_by": actor.name, "updated_at": _now().isoformat()}
    p = paths(home)

    def change(doc):
        doc.setdefault("endpoints", {})[endpoint] = entry

    update_json(p["schedules"], p["edit_lock"], change, default=lambda: {"endpoints": {}})
    return {"endpoint": endpoint, **entry}


def remove_schedule(actor: Actor, home: str | os.PathLike, endpoint: str) -> bool:
    from qcbr.lifecycle.local.state import update_json

    require(actor, "set_monitoring_policy")
    p = paths(home)
    removed = []

    def change(doc):
        removed.append(doc.setdefault("endpoints", {}).pop(endpoint, None) is not None)

    update_json(p["schedules"], p["edit_lock"], change, default=lambda: {"endpoints": {}})
    return removed[0]


def load_state(home: str | os.PathLike) -> dict[str, dict]:
    from qcbr.storage import read_json

    try:
        return dict(read_json(paths(home)["state"]) or {})
    except (FileNotFoundError, ValueError):
        return {}


def due_endpoints(schedules: dict[str, dict], state: dict[str, dict], now: datetime) -> list[str]:
    """Enabled schedules whose interval has passed since their last run (or that never ran)."""
    out = []
    for name, sched in sorted(schedules.items()):
        if not sched.get("enabled", True):
            continue
        last = (state.get(name) or {}).get("last_run")
        if last is None or datetime.fromisoformat(last) + timedelta(minutes=float(sched.get("every_minutes", 60))) <= now:
            out.append(name)
    return out


def _since(sched: dict, last: dict | None, now: datetime) -> datetime | None:
    if sched.get("window_minutes"):
        return now - timedelta(minutes=float(sched["window_minutes"]))
    return datetime.fromisoformat(last["last_run"]) if last and last.get("last_run") else None


def run_due(home: str | os.PathLike, now: datetime | None = None, backend=None, store=None,
            actor: Actor = OPERATOR) -> list[dict]:
    """One scheduler tick: monitor every due endpoint, apply its policy, finish pending retrains."""
    from qcbr.lifecycle.local.state import update_json
    from qcbr.monitoring.job import monitor_endpoint
    from qcbr.monitoring.policy import apply_policy, complete_pending

    if backend is None or store is None:
        from qcbr.config import load_config
        from qcbr.lifecycle import get_backend
        from qcbr.storage import open_store

        config = load_config({**os.environ, "QCBR_HOME": str(Path(home).expanduser().resolve())})
        backend = backend or get_backend(config)
        store = store or open_store(config)
    now = now or _now()
    schedules = load_schedules(home)
    state = load_state(home)
    results = []
    for endpoint in due_endpoints(schedules, state, now):
        entry: dict[str, Any] = {"endpoint": endpoint, "time": now.isoformat()}
        try:
            record = monitor_endpoint(backend, store, endpoint, _since(schedules[endpoint], state.get(endpoint), now),
                                      actor=actor, schedule_name=f"{endpoint}-schedule", now=now)
            entry["execution"] = record
            entry["decision"] = apply_policy(backend, store, endpoint, record, actor=actor, now=now)
            _log(f"{endpoint}: {record['MonitoringExecutionStatus']} ({record['ViolationsCount']} violations)"
                 + (f" {record['FailureReason']}" if record.get("FailureReason") else "")
                 + f"; policy {'fired' if entry['decision']['fire'] else 'quiet'}")
        except QCBRError as exc:
            entry["error"] = str(exc)
            _log(f"{endpoint}: error: {exc}")
        except Exception as exc:  # a scheduler must outlive one bad endpoint
            entry["error"] = f"{type(exc).__name__}: {exc}"
            _log(f"{endpoint}: unexpected error\n{traceback.format_exc()}")

        def change(doc, endpoint=endpoint, entry=entry):
            doc[endpoint] = {"last_run": now.isoformat(), "last_error": entry.get("error"),
                             "last_status": (entry.get("execution") or {}).get("MonitoringExecutionStatus"),
                             "last_execution": (entry.get("execution") or {}).get("ExecutionId")}

        p = paths(home)
        update_json(p["state"], p["edit_lock"], change, default=dict)
        results.append(entry)
    for endpoint in sorted(schedules):
        try:
            for done in complete_pending(backend, store, endpoint, actor=actor):
                _log(f"{endpoint}: automated retrain {done['action'].get('TrainingJobName')} -> {done['action'].get('status')}")
        except Exception as exc:  # noqa: BLE001 - keep ticking
            _log(f"{endpoint}: could not finish pending retrains: {type(exc).__name__}: {exc}")
    return results


# -- the process ----------------------------------------------------------------------------------

def scheduler_status(home: str | os.PathLike) -> dict:
    """{running, pid, started, every_minutes, log}; a pid file left by a dead process reads as not running."""
    from qcbr.lifecycle.local.procs import is_alive
    from qcbr.storage import read_json

    p = paths(home)
    try:
        info = read_json(p["pid"])
    except (FileNotFoundError, ValueError):
        info = {}
    running = bool(info.get("pid")) and is_alive(int(info["pid"]), MODULE)
    return {"running": running, "pid": info.get("pid") if running else None, "started": info.get("started"),
            "every_minutes": info.get("every_minutes"), "log": str(p["log"])}


def start_scheduler(home: str | os.PathLike, every_minutes: float = 5.0) -> dict:
    """Start the scheduler detached (it outlives the caller); a no-op when one already runs."""
    import time

    from qcbr.lifecycle.local.procs import spawn_detached

    status = scheduler_status(home)
    if status["running"]:
        return status
    home = Path(home).expanduser().resolve()
    p = paths(home)
    env = {**os.environ, "QCBR_HOME": str(home)}
    pid = spawn_detached([sys.executable, "-m", MODULE, "--home", str(home), "--every-minutes", str(every_minutes)],
                         p["log"], env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = scheduler_status(home)
        if status["running"]:
            return status
        time.sleep(0.1)
    raise QCBRError(f"the monitoring scheduler (pid {pid}) did not start; see {p['log']}")


def stop_scheduler(home: str | os.PathLike, grace: float = 10.0) -> dict:
    from qcbr.lifecycle.local.procs import stop_group

    status = scheduler_status(home)
    if status["running"]:
        stop_group(int(status["pid"]), grace, MODULE)
    return scheduler_status(home)


def serve(home: Path, every_minutes: float, once: bool = False) -> int:
    from qcbr.lifecycle.local.state import try_lock
    from qcbr.storage import atomic_write_json

    p = paths(home)
    stop = threading.Event()

    def on_signal(signum, _frame):
        _log(f"signal {signum}: stopping after the current tick")
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with try_lock(p["lock"]) as mine:
        if not mine:
            print(f"qcbr: error: another monitoring scheduler runs on {home} (see {p['pid']})", file=sys.stderr)
            return 1
        atomic_write_json(p["pid"], {"pid": os.getpid(), "started": _now().isoformat(), "every_minutes": every_minutes,
                                     "home": str(home)})
        _log(f"monitoring scheduler on {home}, waking every {every_minutes:g} min")
        try:
            while not stop.is_set():
                try:
                    run_due(home)
                except Exception:  # noqa: BLE001 - log and keep the schedule alive
                    _log(f"tick failed\n{traceback.format_exc()}")
                if once:
                    break
                stop.wait(every_minutes * 60.0)
        finally:
            try:
                if json.loads(p["pid"].read_text()).get("pid") == os.getpid():
                    p["pid"].unlink()
            except (FileNotFoundError, ValueError):
                pass
            _log("monitoring scheduler stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description="Run monitoring jobs on their schedules.")
    parser.add_argument("--home", default=os.environ.get("QCBR_HOME", ".qcbr"), help="QCBR_HOME (default: $QCBR_HOME or .qcbr)")
    parser.add_argument("--every-minutes", type=float, default=5.0, help="how often to wake and check schedules (default 5)")
    parser.add_argument("--once", action="store_true", help="run one tick and exit")
    args = parser.parse_args(argv)
    if args.every_minutes <= 0:
        parser.error("--every-minutes must be positive")
    home = Path(args.home).expanduser().resolve()
    os.environ["QCBR_HOME"] = str(home)
    return serve(home, args.every_minutes, once=args.once)


if __name__ == "__main__":
    sys.exit(main())
