"""Schedules and the scheduler process (a real detached subprocess with a pid file and a lock)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from qcbr.errors import QCBRError, RoleError
from qcbr.monitoring.scheduler import (
    due_endpoints, load_schedules, paths, remove_schedule, scheduler_status, set_schedule, start_scheduler,
    stop_scheduler,
)
from qcbr.roles import OPERATOR, Actor

NOW = datetime(2026, 3, 5, 12, 0, tzinfo=timezone.utc)


def test_schedules_are_edited_per_endpoint(tmp_path):
    set_schedule(OPERATOR, tmp_path, "a", every_minutes=60)
    set_schedule(Actor("maria", "manager"), tmp_path, "b", every_minutes=15, window_minutes=120, enabled=False)
    schedules = load_schedules(tmp_path)
    assert schedules["a"]["every_minutes"] == 60 and schedules["a"]["window_minutes"] is None
    assert schedules["b"] | {"updated_at": None} == {"every_minutes": 15.0, "window_minutes": 120.0, "enabled": False,
                                                      "updated_by": "maria", "updated_at": None}
    assert json.loads((tmp_path / "monitoring" / "schedules.json").read_text())["endpoints"].keys() == {"a", "b"}
    assert remove_schedule(OPERATOR, tmp_path, "a") is True and remove_schedule(OPERATOR, tmp_path, "a") is False
    assert set(load_schedules(tmp_path)) == {"b"}
    with pytest.raises(RoleError):
        set_schedule(Actor("bob", "business"), tmp_path, "a")
    with pytest.raises(QCBRError, match="every_minutes must be a positive number"):
        set_schedule(OPERATOR, tmp_path, "a", every_minutes=0)


def test_due_endpoints():
    schedules = {"hourly": {"every_minutes": 60}, "paused": {"every_minutes": 1, "enabled": False},
                 "fresh": {"every_minutes": 30}, "never": {"every_minutes": 600}}
    state = {"hourly": {"last_run": (NOW - timedelta(minutes=61)).isoformat()},
             "fresh": {"last_run": (NOW - timedelta(minutes=10)).isoformat()}}
    assert due_endpoints(schedules, state, NOW) == ["hourly", "never"]


def test_scheduler_process_runs_once_per_home_and_stops_cleanly(tmp_path):
    home = tmp_path / "home"
    status = start_scheduler(home, every_minutes=0.01)
    try:
        assert status["running"] and status["pid"] > 0
        pid_file = paths(home)["pid"]
        assert json.loads(pid_file.read_text())["pid"] == status["pid"]
        assert start_scheduler(home)["pid"] == status["pid"]  # already running: no second one
        second = subprocess.run([sys.executable, "-m", "qcbr.monitoring.scheduler", "--home", str(home), "--once"],
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 1 and "another monitoring scheduler runs" in second.stderr
        time.sleep(1.5)  # several ticks with no schedules
        assert scheduler_status(home)["running"]
    finally:
        final = stop_scheduler(home)
    assert final["running"] is False and not pid_file.exists()
    log = paths(home)["log"].read_text()
    assert "waking every 0.01 min" in log and "monitoring scheduler stopped" in log
    # a pid file left behind by a dead process reads as not running
    pid_file.write_text(json.dumps({"pid": 999999, "started": "x"}))
    assert scheduler_status(home)["running"] is False
