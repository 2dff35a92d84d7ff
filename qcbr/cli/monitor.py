"""``qcbr monitor``: drift/decay executions, their schedules, the scheduler process, and the
automated-adjustment policy.

``qcbr monitor run --endpoint E [--since ISO-8601] [--json]`` reads the baseline from the model
version the endpoint serves (``describe_endpoint`` -> ``describe_model_version`` ->
``ModelDataUrl`` -> ``model.tar.gz``), runs one execution and prints its verdict. Exit code 0
for Completed and CompletedWithViolations (violations are findings, not errors), 1 for Failed.
"""
from __future__ import annotations

import argparse
import json
import sys

from qcbr.cli import current_actor, print_json


def _fraction(text: str) -> float | None:
    if text.lower() in ("none", "null", "off"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number between 0 and 1 (or 'off')") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must lie between 0 and 1 (or be 'off')")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser("monitor", help="drift, novelty and decay monitoring of endpoints",
                              description="Monitor endpoints against their model's training baseline.")
    sub = p.add_subparsers(dest="monitor_command", metavar="ACTION", required=True)

    r = sub.add_parser("run", help="run one monitoring execution now")
    r.add_argument("--endpoint", required=True, metavar="E")
    r.add_argument("--since", metavar="ISO-8601", default=None, help="first capture time to analyse (default: all)")
    r.add_argument("--until", metavar="ISO-8601", default=None, help="end of the window (default: now)")
    r.add_argument("--json", action="store_true", help="print the execution, its violations and per-feature details as JSON")
    r.set_defaults(func=cmd_run)

    e = sub.add_parser("executions", help="list past executions, newest first")
    e.add_argument("--endpoint", metavar="E", default=None)
    e.add_argument("--limit", type=int, default=20)
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_executions)

    s = sub.add_parser("schedule", help="schedule an endpoint's monitoring (local scheduler)")
    s.add_argument("--endpoint", metavar="E", default=None)
    s.add_argument("--every-minutes", type=_positive, default=60.0)
    s.add_argument("--window-minutes", type=_positive, default=None,
                   help="analyse the last N minutes (default: everything since the previous run)")
    s.add_argument("--disable", action="store_true", help="keep the schedule but pause it")
    s.add_argument("--remove", action="store_true", help="delete the endpoint's schedule")
    s.add_argument("--list", action="store_true", help="print all schedules")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_schedule)

    sc = sub.add_parser("scheduler", help="start, stop or inspect the local scheduler process")
    sc.add_argument("action", choices=("start", "stop", "status"))
    sc.add_argument("--every-minutes", type=_positive, default=5.0, help="how often it wakes (start only)")
    sc.add_argument("--json", action="store_true")
    sc.set_defaults(func=cmd_scheduler)

    po = sub.add_parser("policy", help="show or change an endpoint's automated-adjustment policy")
    po.add_argument("--endpoint", required=True, metavar="E")
    S = argparse.SUPPRESS  # absent unless given, so only what the user names changes
    po.add_argument("--max-drift-share", type=_fraction, metavar="F", default=S, help="fraction, or 'off'")
    po.add_argument("--max-novel-share", type=_fraction, metavar="F", default=S, help="fraction, or 'off'")
    po.add_argument("--max-accuracy-drop", type=_fraction, metavar="F", default=S, help="fraction, or 'off'")
    po.add_argument("--min-rows", type=int, metavar="N", default=S)
    po.add_argument("--min-labelled", type=int, metavar="N", default=S)
    po.add_argument("--cooldown-hours", type=float, metavar="H", default=S)
    po.add_argument("--enable", dest="enabled", action="store_const", const=True, default=S)
    po.add_argument("--disable", dest="enabled", action="store_const", const=False, default=S)
    po.add_argument("--history", action="store_true", help="print the policy's edits and decisions")
    po.add_argument("--json", action="store_true")
    po.set_defaults(func=cmd_policy)


def _context():
    from qcbr.config import load_config
    from qcbr.lifecycle import get_backend
    from qcbr.storage import open_store

    config = load_config()
    return config, get_backend(config), open_store(config)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"
    return str(v)


def cmd_run(args) -> int:
    from qcbr.monitoring.job import load_execution, monitor_endpoint

    config, backend, store = _context()
    actor = current_actor()

    def progress(fraction: float, message: str) -> None:
        if not args.json and sys.stderr.isatty():
            sys.stderr.write(f"\r[{'#' * int(fraction * 20):<20}] {message[:60]:<60}")
            sys.stderr.flush()

    record = monitor_endpoint(backend, store, args.endpoint, args.since, actor=actor, until=args.until, progress=progress)
    if not args.json and sys.stderr.isatty():
        sys.stderr.write("\n")
    details = load_execution(store, args.endpoint, record["ExecutionId"])
    report = details["report"]
    features = []
    for f in (report.get("drift") or {}).get("features", []):
        features.append({k: f.get(k) for k in ("name", "inferred_type", "verdict", "drifted", "statistic", "value", "threshold",
                                                "metrics", "thresholds", "exceeded", "completeness", "violations", "note")})
    if args.json:
        print_json({**record, "violations": details["violations"], "features": features,
                    "prediction_drift": _strip(report.get("prediction_drift")), "novelty": _strip(report.get("novelty")),
                    "decay": report.get("decay")})
        return 1 if record["MonitoringExecutionStatus"] == "Failed" else 0
    status = record["MonitoringExecutionStatus"]
    print(f"endpoint {args.endpoint}: {status}  (execution {record['ExecutionId']}, model version "
          f"{_fmt(record.get('ModelPackageVersion'))})")
    if status == "Failed":
        print(f"qcbr: error: monitoring failed: {record['FailureReason']}", file=sys.stderr)
        return 1
    s = record["Summary"]
    print(f"rows {s['n_rows']}, drift share {_fmt(s['drift_share'])}, novel share {_fmt(s['novel_share'])}, "
          f"accuracy {_fmt(s['accuracy'])} on {s['n_labelled']} labelled (validation {_fmt(s['reference_accuracy'])})")
    print(f"{'feature':<24} {'type':<10} {'statistic':<20} {'value':>10} {'threshold':>10}  verdict")
    for f in features:
        print(f"{f['name'][:24]:<24} {f['inferred_type']:<10} {_fmt(f.get('statistic')):<20} {_fmt(f.get('value')):>10} "
              f"{_fmt(f.get('threshold')):>10}  {f['verdict']}")
    for v in details["violations"]:
        print(f"violation {v['constraint_check_type']} on {v['feature_name']}: {v['description']}")
    print(f"report: {record['ReportUri']}")
    return 0


def _strip(d: dict | None) -> dict | None:
    return {k: v for k, v in d.items() if k != "distribution"} if isinstance(d, dict) else d


def cmd_executions(args) -> int:
    from qcbr.monitoring.job import list_executions

    _, _, store = _context()
    records = list_executions(store, args.endpoint, args.limit)
    if args.json:
        print_json(records)
        return 0
    if not records:
        print("no monitoring executions yet; run `qcbr monitor run --endpoint E`")
    for r in records:
        print(f"{r['ScheduledTime']}  {r['EndpointName']:<20} {r['MonitoringExecutionStatus']:<24} "
              f"violations {r['ViolationsCount']:<3} {r.get('FailureReason') or ''}")
    return 0


def cmd_schedule(args) -> int:
    from qcbr.monitoring.scheduler import load_schedules, remove_schedule, set_schedule

    from qcbr.config import load_config

    config = load_config()
    actor = current_actor()
    if args.list or not args.endpoint:
        schedules = load_schedules(config.home)
        if args.json:
            print_json(schedules)
        else:
            for name, s in sorted(schedules.items()):
                print(f"{name:<24} every {s['every_minutes']:g} min  {'enabled' if s.get('enabled', True) else 'paused'}")
            if not schedules:
                print("no schedules; add one with `qcbr monitor schedule --endpoint E --every-minutes M`")
        return 0
    if args.remove:
        removed = remove_schedule(actor, config.home, args.endpoint)
        print_json({"endpoint": args.endpoint, "removed": removed}) if args.json else print(
            f"schedule of {args.endpoint} {'removed' if removed else 'did not exist'}")
        return 0
    entry = set_schedule(actor, config.home, args.endpoint, args.every_minutes, args.window_minutes, enabled=not args.disable)
    if args.json:
        print_json(entry)
    else:
        print(f"{args.endpoint}: every {entry['every_minutes']:g} min ({'enabled' if entry['enabled'] else 'paused'}); "
              "the local scheduler must run: `qcbr monitor scheduler start`")
    return 0


def cmd_scheduler(args) -> int:
    from qcbr.config import load_config
    from qcbr.monitoring.scheduler import scheduler_status, start_scheduler, stop_scheduler
    from qcbr.roles import require

    config = load_config()
    if args.action != "status":
        require(current_actor(), "set_monitoring_policy")
    status = {"start": lambda: start_scheduler(config.home, args.every_minutes),
              "stop": lambda: stop_scheduler(config.home),
              "status": lambda: scheduler_status(config.home)}[args.action]()
    if args.json:
        print_json(status)
    else:
        print(f"monitoring scheduler: {'running, pid ' + str(status['pid']) if status['running'] else 'not running'} (log {status['log']})")
    return 0


def cmd_policy(args) -> int:
    from qcbr.monitoring.policy import get_policy, policy_history, set_policy

    _, _, store = _context()
    if args.history:
        events = policy_history(store, args.endpoint, limit=50)
        if args.json:
            print_json(events)
        else:
            for e in events:
                what = (f"edit by {e.get('by')}: {json.dumps(e.get('changes'))}" if e["kind"] == "edit" else
                        f"{e['kind']}: fire={e.get('fire')} action={(e.get('action') or {}).get('status')} {'; '.join(e.get('reasons', []))}")
                print(f"{e['time']}  {what}")
        return 0
    names = ("max_drift_share", "max_novel_share", "max_accuracy_drop", "min_rows", "min_labelled", "cooldown_hours", "enabled")
    changes = {k: getattr(args, k) for k in names if hasattr(args, k)}
    policy = set_policy(current_actor(), store, args.endpoint, changes) if changes else get_policy(store, args.endpoint)
    if args.json:
        print_json(policy)
    else:
        for k in ("enabled", "max_drift_share", "max_novel_share", "max_accuracy_drop", "min_rows", "min_labelled", "cooldown_hours"):
            print(f"{k:<18} {_fmt(policy.get(k))}")
    return 0
