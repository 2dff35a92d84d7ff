"""The lifecycle commands: train, jobs, models, endpoints, predict, ground-truth, demo.

Every list/describe takes ``--json`` and prints records with SageMaker's field names (plus
``EndpointUrl``); without it, a short human view. The backend (and with it mlflow, boto3 and
qiskit) loads only when a command runs, so ``qcbr --help`` stays fast.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from qcbr.cli import current_actor, print_json


# -- helpers ---------------------------------------------------------------------------------------
def _backend():
    from qcbr.lifecycle import get_backend

    return get_backend()


def _hp(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. --hp feature_map=zz --hp k=5)")
    return key.strip(), value.strip()


def _version(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a model version (a whole number from 1, see `qcbr models list`)")
    return number


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not an accuracy between 0 and 1")
    return value


def _table(rows: list[dict], columns: list[tuple[str, str]], empty: str) -> None:
    if not rows:
        print(empty)
        return
    cells = [[("" if r.get(k) is None else str(r.get(k))) for k, _ in columns] for r in rows]
    widths = [max(len(title), *(len(c[i]) for c in cells)) for i, (_, title) in enumerate(columns)]
    print("  ".join(title.ljust(w) for (_, title), w in zip(columns, widths)).rstrip())
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def _short_time(value: str | None) -> str:
    return (value or "")[:19].replace("T", " ")


class ProgressBar:
    """A text progress bar on stderr: redrawn in place on a terminal, a line per change otherwise."""

    def __init__(self, stream=None, width: int = 30):
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last: tuple[int, str] | None = None

    def update(self, fraction: float, message: str) -> None:
        fraction = max(0.0, min(1.0, float(fraction)))
        percent = int(round(fraction * 100))
        filled = int(round(fraction * self.width))
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {percent:3d}% {message}"
        if self._last == (percent, message):
            return
        self._last = (percent, message)
        if self.tty:
            self.stream.write("\r" + line[:120].ljust(120))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._last is not None:
            self.stream.write("\n")
            self.stream.flush()


# -- train / jobs ----------------------------------------------------------------------------------
def _wait_job(backend, name: str, quiet: bool = False) -> dict:
    bar = None if quiet else ProgressBar()
    try:
        record = backend.wait_training_job(
            name, progress=(lambda r: bar.update(r["Progress"]["Fraction"], r["Progress"]["Message"])) if bar else None,
        )
    finally:
        if bar:
            bar.close()
    return record


def cmd_train(args) -> int:
    backend = _backend()
    record = backend.create_training_job(current_actor(), args.dataset, dict(args.hp or []),
                                         job_name=args.job_name, dataset_sha256=args.sha)
    name = record["TrainingJobName"]
    started = f"started training job {name} on dataset {args.dataset} ({record['Lineage']['DatasetSha256'][:12]})"
    if args.wait or not args.json:
        print(started, file=sys.stderr if args.wait or args.json else sys.stdout)
    if args.wait:
        record = _wait_job(backend, name)
    if args.json:
        print_json(record)
    elif args.wait:
        _print_job(record, log=record["TrainingJobStatus"] != "Completed")
    return 0 if not args.wait or record["TrainingJobStatus"] == "Completed" else 1


def _print_job(r: dict, log: bool = False) -> None:
    print(f"TrainingJobName:   {r['TrainingJobName']}")
    print(f"TrainingJobStatus: {r['TrainingJobStatus']} ({r['SecondaryStatus']})")
    if r.get("FailureReason"):
        print(f"FailureReason:     {r['FailureReason']}")
    print(f"Progress:          {r['Progress']['Fraction']:.0%} {r['Progress']['Message']}")
    print(f"Dataset:           {r['Lineage']['DatasetName']} ({r['Lineage']['DatasetSha256'][:12]})")
    print(f"MlflowRunId:       {r['Lineage']['MlflowRunId'] or '-'}")
    print(f"HyperParameters:   {json.dumps(r['HyperParameters'], sort_keys=True)}")
    print(f"Created:           {_short_time(r['CreationTime'])} by {r['CreatedBy']}")
    if r.get("TrainingEndTime"):
        print(f"Ended:             {_short_time(r['TrainingEndTime'])}")
    if r.get("ModelArtifacts"):
        print(f"ModelArtifacts:    {r['ModelArtifacts']['S3ModelArtifacts']}")
    for metric in r.get("FinalMetricDataList") or []:
        print(f"  {metric['MetricName']}: {metric['Value']:.4f}")
    if log and r.get("Log"):
        print("Log (tail):")
        for line in r["Log"].splitlines()[-20:]:
            print(f"  {line}")


def cmd_jobs_list(args) -> int:
    records = _backend().list_training_jobs()
    if args.json:
        print_json(records)
        return 0
    rows = [{**r, "Dataset": r["Lineage"]["DatasetName"], "Progress%": f"{r['Progress']['Fraction']:.0%}",
             "Created": _short_time(r["CreationTime"]), "Reason": (r.get("FailureReason") or "")[:60]} for r in records]
    _table(rows, [("TrainingJobName", "NAME"), ("TrainingJobStatus", "STATUS"), ("Progress%", "PROGRESS"),
                  ("Dataset", "DATASET"), ("Created", "CREATED"), ("Reason", "REASON")],
           "no training jobs yet; start one with `qcbr train --dataset NAME`")
    return 0


def cmd_jobs_describe(args) -> int:
    record = _backend().describe_training_job(args.name)
    if args.json:
        print_json(record)
    else:
        _print_job(record, log=args.log or record["TrainingJobStatus"] in ("Failed", "Stopped"))
    return 0


def cmd_jobs_stop(args) -> int:
    record = _backend().stop_training_job(current_actor(), args.name, wait=30.0 if args.wait else 0.0)
    if args.json:
        print_json(record)
    else:
        print(f"training job {args.name}: {record['TrainingJobStatus']}")
    return 0


# -- models ----------------------------------------------------------------------------------------
def _print_model(r: dict) -> None:
    print(f"ModelPackageVersion: {r['ModelPackageVersion']} ({r['ModelPackageGroupName']})")
    print(f"ModelApprovalStatus: {r['ModelApprovalStatus']}")
    if r.get("ModelPackageDescription"):
        print(f"Description:         {r['ModelPackageDescription']}")
    print(f"Created:             {_short_time(r['CreationTime'])} by {r['CreatedBy']}")
    print(f"ModelDataUrl:        {r['ModelDataUrl']}")
    lineage = r["Lineage"]
    print(f"Lineage:             dataset {lineage['DatasetName']} ({(lineage['DatasetSha256'] or '')[:12]}) -> "
          f"job {lineage['TrainingJobName']} -> run {lineage['MlflowRunId']} -> version {r['ModelPackageVersion']} -> "
          f"endpoints {', '.join(lineage['Endpoints']) or '(none)'}")
    for name, value in sorted(r["ModelMetrics"].items()):
        print(f"  {name}: {value:.4f}")
    print("ApprovalHistory:")
    for entry in r["ApprovalHistory"]:
        comment = f" - {entry['Comment']}" if entry.get("Comment") else ""
        print(f"  {_short_time(entry['Time'])} {entry['Status']} by {entry['By']}{comment}")


def cmd_models_list(args) -> int:
    records = _backend().list_model_versions()
    if args.json:
        print_json(records)
        return 0
    rows = [{**r, "Accuracy": (f"{r['ModelMetrics']['validation:accuracy']:.3f}"
                               if "validation:accuracy" in r["ModelMetrics"] else ""),
             "Job": r["Lineage"]["TrainingJobName"], "Endpoints": ",".join(r["Lineage"]["Endpoints"]),
             "Created": _short_time(r["CreationTime"])} for r in records]
    _table(rows, [("ModelPackageVersion", "VERSION"), ("ModelApprovalStatus", "STATUS"), ("Accuracy", "ACCURACY"),
                  ("Job", "TRAINING JOB"), ("Endpoints", "ENDPOINTS"), ("Created", "CREATED")],
           "no model versions yet; register a completed job with `qcbr models register --job NAME`")
    return 0


def cmd_models_describe(args) -> int:
    record = _backend().describe_model_version(args.version)
    print_json(record) if args.json else _print_model(record)
    return 0


def cmd_models_register(args) -> int:
    record = _backend().register_model(current_actor(), args.job, min_accuracy=args.min_accuracy,
                                       description=args.description or "")
    if args.json:
        print_json(record)
    else:
        print(f"registered model version {record['ModelPackageVersion']} from job {args.job}: "
              f"{record['ModelApprovalStatus']}")
    return 0


def cmd_models_decide(args) -> int:
    backend = _backend()
    method = backend.approve_model if args.decision == "approve" else backend.reject_model
    record = method(current_actor(), args.version, comment=args.comment or "")
    if args.json:
        print_json(record)
    else:
        print(f"model version {record['ModelPackageVersion']}: {record['ModelApprovalStatus']}")
    return 0


# -- endpoints -------------------------------------------------------------------------------------
def _print_endpoint(r: dict) -> None:
    print(f"EndpointName:        {r['EndpointName']} ({r['Stage']})")
    print(f"EndpointStatus:      {r['EndpointStatus']}")
    if r.get("FailureReason"):
        print(f"FailureReason:       {r['FailureReason']}")
    print(f"ModelPackageVersion: {r['ModelPackageVersion']}")
    print(f"EndpointUrl:         {r['EndpointUrl'] or '-'}")
    if r.get("EndpointUrl"):
        print(f"Invoke:              POST {r['EndpointUrl']}/endpoints/{r['EndpointName']}/invocations")
    print(f"Created:             {_short_time(r['CreationTime'])} by {r['CreatedBy']}")
    print(f"LastModified:        {_short_time(r['LastModifiedTime'])}")


def _endpoint_result(record: dict, args) -> int:
    if getattr(args, "json", False):
        print_json(record)
    else:
        _print_endpoint(record)
    return 0 if record["EndpointStatus"] != "Failed" else 1


def cmd_endpoints_deploy(args) -> int:
    record = _backend().create_endpoint(current_actor(), args.name, args.model, args.stage, wait=args.wait)
    return _endpoint_result(record, args)


def cmd_endpoints_update(args) -> int:
    record = _backend().update_endpoint(current_actor(), args.name, args.model)
    return _endpoint_result(record, args)


def cmd_endpoints_restart(args) -> int:
    record = _backend().restart_endpoint(current_actor(), args.name, wait=args.wait)
    return _endpoint_result(record, args)


def cmd_endpoints_list(args) -> int:
    records = _backend().list_endpoints()
    if args.json:
        print_json(records)
        return 0
    _table(records, [("EndpointName", "NAME"), ("EndpointStatus", "STATUS"), ("Stage", "STAGE"),
                     ("ModelPackageVersion", "VERSION"), ("EndpointUrl", "URL"), ("FailureReason", "REASON")],
           "no endpoints; deploy one with `qcbr endpoints deploy --model VERSION --name NAME`")
    return 0


def cmd_endpoints_describe(args) -> int:
    record = _backend().describe_endpoint(args.name)
    print_json(record) if args.json else _print_endpoint(record)
    return 0


def cmd_endpoints_delete(args) -> int:
    _backend().delete_endpoint(current_actor(), args.name)
    print(f"deleted endpoint {args.name}")
    return 0


# -- predict / ground truth / demo -----------------------------------------------------------------
def _not_csv_text(path: Path, body: bytes) -> str | None:
    """Why ``body`` cannot be sent as text/csv (the endpoint reads UTF-8), or None."""
    if b"\x00" in body[:65536]:
        return f"{path} is a binary file, not CSV text. Fix: export the table as CSV (UTF-8)"
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (f"{path} is not UTF-8 text (byte 0x{body[exc.start]:02x} at offset {exc.start}; a Windows or "
                f"Latin-1 export?). Fix: save it as 'CSV UTF-8', with ',' between fields and '.' for decimals")
    return None


def cmd_predict(args) -> int:
    if args.csv:
        path = Path(args.csv)
        if not path.is_file():
            print(f"qcbr: error: CSV file {path} does not exist", file=sys.stderr)
            return 1
        body, content_type = path.read_bytes(), "text/csv"
        problem = _not_csv_text(path, body)
        if problem:
            print(f"qcbr: error: {problem}", file=sys.stderr)
            return 1
    else:
        try:
            json.loads(args.json_body)
        except ValueError as exc:
            print(f"qcbr: error: --json is not valid JSON ({exc}); e.g. --json '{{\"instances\": [{{...}}]}}'",
                  file=sys.stderr)
            return 2
        body, content_type = args.json_body, "application/json"
    result = _backend().invoke(current_actor(), args.endpoint, body, content_type)
    if args.raw:
        print_json(result)
        return 0
    print(f"endpoint {result['endpoint']} (model version {result['model_version']})")
    rows = [{**p, "confidence": f"{p['confidence']:.3f}", "flagged": "FLAGGED" if p.get("flagged") else "",
             "nearest": ", ".join(f"{c['case_id']}:{c['label']}({c['score']:.2f})" for c in p.get("similar_cases", [])[:3])}
            for p in result["predictions"]]
    _table(rows, [("inference_id", "INFERENCE ID"), ("label", "LABEL"), ("confidence", "CONFIDENCE"),
                  ("flagged", "REVIEW"), ("nearest", "MOST SIMILAR CASES")], "no predictions")
    return 0


def cmd_ground_truth(args) -> int:
    record = _backend().submit_ground_truth(current_actor(), args.inference_id, args.label)
    if args.json:
        print_json(record)
    else:
        print(f"ground truth for {args.inference_id}: {record['groundTruthData']['data']}")
    return 0


def cmd_demo(args) -> int:
    backend = _backend()
    bar = None if args.json else ProgressBar()
    try:
        summary = backend.seed_demo(current_actor(), progress=bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    if args.json:
        print_json(summary)
        return 0
    print("DEMO ready (scikit-learn's iris flowers; not business data)")
    print(f"  dataset:        {summary['DatasetName']} ({summary['DatasetSha256'][:12]})")
    print(f"  training job:   {summary['TrainingJobName']}")
    print(f"  model version:  {summary['ModelPackageVersion']} ({summary['ModelApprovalStatus']})")
    print(f"  endpoint:       {summary['EndpointName']} ({summary['EndpointStatus']}) at {summary['EndpointUrl']}")
    print(f"  try:            qcbr predict --endpoint {summary['EndpointName']} --json "
          "'{\"sepal length (cm)\": 5.1, \"sepal width (cm)\": 3.5, \"petal length (cm)\": 1.4, \"petal width (cm)\": 0.2}'")
    return 0


# -- wiring ----------------------------------------------------------------------------------------
def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the record(s) as JSON with SageMaker field names")


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="start a training job on a dataset",
                              description="Start a SageMaker-style training job (python -m qcbr.training.train).")
    p.add_argument("--dataset", required=True, metavar="NAME", help="dataset name (`qcbr cases upload ... --name NAME`)")
    p.add_argument("--sha", default=None, metavar="SHA256", help="dataset version (default: the newest)")
    p.add_argument("--hp", type=_hp, action="append", metavar="KEY=VALUE",
                   help="hyperparameter, repeatable: feature_map, n_qubits, reps, alpha, k, reuse, similarity, "
                        "shots, noise, epsilon, random_state, validation_fraction")
    p.add_argument("--job-name", default=None, help="job name (default: <dataset>-<time>-<random>)")
    p.add_argument("--wait", action="store_true", help="wait for the job to end, with a progress bar on stderr")
    _json_flag(p)
    p.set_defaults(func=cmd_train)

    jobs = subparsers.add_parser("jobs", help="list, describe and stop training jobs").add_subparsers(
        dest="jobs_command", metavar="ACTION", required=True)
    p = jobs.add_parser("list", help="all training jobs, newest first")
    _json_flag(p)
    p.set_defaults(func=cmd_jobs_list)
    p = jobs.add_parser("describe", help="one job: status, progress, metrics, log tail")
    p.add_argument("name")
    p.add_argument("--log", action="store_true", help="show the log tail")
    _json_flag(p)
    p.set_defaults(func=cmd_jobs_describe)
    p = jobs.add_parser("stop", help="stop a running job (SIGTERM, then SIGKILL after a grace period)")
    p.add_argument("name")
    p.add_argument("--wait", action="store_true", help="wait until it is Stopped")
    _json_flag(p)
    p.set_defaults(func=cmd_jobs_stop)

    models = subparsers.add_parser("models", help="the model registry: list, describe, register, approve, reject")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    p = msub.add_parser("list", help="model versions, newest first")
    _json_flag(p)
    p.set_defaults(func=cmd_models_list)
    p = msub.add_parser("describe", help="one version: approval history, metrics, lineage")
    p.add_argument("version", type=_version, metavar="VERSION")
    _json_flag(p)
    p.set_defaults(func=cmd_models_describe)
    p = msub.add_parser("register", help="register a Completed training job as a new version (PendingManualApproval)")
    p.add_argument("--job", required=True, metavar="NAME")
    p.add_argument("--min-accuracy", type=_fraction, default=None, metavar="X",
                   help="register only if validation accuracy >= X")
    p.add_argument("--description", default="")
    _json_flag(p)
    p.set_defaults(func=cmd_models_register)
    for decision in ("approve", "reject"):
        p = msub.add_parser(decision, help=f"{decision} a version (managers)")
        p.add_argument("version", type=_version, metavar="VERSION")
        p.add_argument("--comment", default="", help="recorded in the approval history")
        _json_flag(p)
        p.set_defaults(func=cmd_models_decide, decision=decision)

    endpoints = subparsers.add_parser("endpoints", help="deploy, list, describe, update, restart, delete endpoints")
    esub = endpoints.add_subparsers(dest="endpoints_command", metavar="ACTION", required=True)
    p = esub.add_parser("deploy", help="start an endpoint serving a model version")
    p.add_argument("--model", required=True, type=_version, metavar="VERSION")
    p.add_argument("--name", required=True, metavar="E")
    p.add_argument("--stage", choices=("staging", "prod"), default="staging",
                   help="prod needs an Approved version and a manager")
    p.add_argument("--wait", action="store_true", help="wait until InService (or Failed)")
    _json_flag(p)
    p.set_defaults(func=cmd_endpoints_deploy)
    p = esub.add_parser("update", help="switch an endpoint to another version (blue/green, no failed requests)")
    p.add_argument("name", metavar="E")
    p.add_argument("--model", required=True, type=_version, metavar="VERSION")
    _json_flag(p)
    p.set_defaults(func=cmd_endpoints_update)
    p = esub.add_parser("restart", help="restart a Failed (or running) endpoint's server")
    p.add_argument("name", metavar="E")
    p.add_argument("--wait", action="store_true", help="wait until InService (or Failed)")
    _json_flag(p)
    p.set_defaults(func=cmd_endpoints_restart)
    p = esub.add_parser("list", help="all endpoints")
    _json_flag(p)
    p.set_defaults(func=cmd_endpoints_list)
    p = esub.add_parser("describe", help="one endpoint")
    p.add_argument("name", metavar="E")
    _json_flag(p)
    p.set_defaults(func=cmd_endpoints_describe)
    p = esub.add_parser("delete", help="stop an endpoint and remove it")
    p.add_argument("name", metavar="E")
    p.set_defaults(func=cmd_endpoints_delete)

    p = subparsers.add_parser("predict", help="query an endpoint through the API's Lambda handler")
    p.add_argument("--endpoint", required=True, metavar="E")
    body = p.add_mutually_exclusive_group(required=True)
    body.add_argument("--json", dest="json_body", metavar="JSON",
                      help='one record {"feature": value, ...} or {"instances": [...]}')
    body.add_argument("--csv", metavar="FILE", help="CSV rows in feature order (optional header row)")
    p.add_argument("--raw", action="store_true", help="print the whole response as JSON")
    p.set_defaults(func=cmd_predict)

    p = subparsers.add_parser("ground-truth", help="record the true label of a served prediction")
    p.add_argument("inference_id", metavar="INFERENCE_ID")
    p.add_argument("label", metavar="LABEL")
    _json_flag(p)
    p.set_defaults(func=cmd_ground_truth)

    p = subparsers.add_parser("demo", help="seed a DEMO: iris dataset, trained + approved model, staging endpoint")
    _json_flag(p)
    p.set_defaults(func=cmd_demo)
