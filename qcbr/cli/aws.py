"""``qcbr aws ...`` (check the AWS set-up, pipeline steps, signed API calls) and ``qcbr lambda package``.

Nothing here imports boto3 until a command runs, so ``qcbr --help`` stays fast and the local
backend never loads AWS code.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from qcbr.cli import print_json

DEFAULT_ZIP = "$QCBR_HOME/lambda/qcbr-lambda.zip"


def _aws_backend():
    from qcbr.config import load_config
    from qcbr.errors import ConfigError
    from qcbr.lifecycle.aws import AwsBackend

    config = load_config()
    if config.backend != "aws":
        raise ConfigError("this command drives AWS: export QCBR_BACKEND=aws (and run `qcbr aws check`)")
    return AwsBackend(config)


def cmd_check(args) -> int:
    from qcbr.lifecycle.aws.check import as_json, render, run_checks

    items = run_checks()
    if args.json:
        print_json(as_json(items))
    else:
        print(render(items))
    return 1 if any(i.problem for i in items) else 0


def cmd_deploy_config(args) -> int:
    from qcbr.lifecycle.aws.pipeline import deploy_config

    result = deploy_config(_aws_backend(), args.out_dir, args.instance_type, args.version)
    if args.json:
        print_json(result)
    else:
        for stage, path in result["Files"].items():
            print(f"{stage}: {path} (model version {result['ModelPackageVersion']}, lambda {result['LambdaCodeKey']})")
    return 0


def cmd_smoke_test(args) -> int:
    from qcbr.lifecycle.aws.pipeline import smoke_test

    result = smoke_test(_aws_backend(), args.stack, args.rows)
    if args.json:
        print_json(result)
    else:
        print(f"{result['Stack']}: {result['Cases']} cases answered by model version "
              f"{result['ModelPackageVersion']} at {result['ApiUrl']}: {', '.join(map(str, result['Labels']))}")
    return 0


def cmd_call(args) -> int:
    from qcbr.config import load_config
    from qcbr.errors import ConfigError
    from qcbr.lifecycle.aws.pipeline import call_api

    if args.csv:
        path = Path(args.csv)
        if not path.is_file():
            raise ConfigError(f"CSV file {path} does not exist")
        body, content_type = path.read_bytes(), "text/csv"
    else:
        try:
            json.loads(args.json_body)
        except ValueError as exc:
            print(f"qcbr: error: --json is not valid JSON ({exc})", file=sys.stderr)
            return 2
        body, content_type = args.json_body, "application/json"
    region = args.region or load_config().aws_region
    if not region:
        raise ConfigError("no region to sign for: export AWS_DEFAULT_REGION or pass --region")
    status, answer = call_api(args.url, body, region, content_type)
    print_json(answer)
    return 0 if 200 <= status < 300 else 1


def cmd_lambda_package(args) -> int:
    from qcbr.lifecycle.aws.lambda_zip import HANDLERS, build
    from qcbr.storage import atomic_write_bytes

    package = build()
    if args.out:
        out = Path(args.out)
    else:
        from qcbr.config import load_config

        out = load_config().home / "lambda" / "qcbr-lambda.zip"
    atomic_write_bytes(out, package.data)
    summary = {"Path": str(out), "Sha256": package.sha256, "Bytes": len(package.data), "Files": package.files,
               "LeftOut": package.skipped,
               "Handlers": [f"{m}.handler" for m in HANDLERS]}
    if args.json:
        print_json(summary)
    else:
        print(f"wrote {out} ({len(package.data)} bytes, {len(package.files)} files, sha256 {package.sha256})")
        print(f"handlers: {', '.join(f'{m}.handler' for m in HANDLERS)}")
    return 0


def register(subparsers) -> None:
    aws = subparsers.add_parser("aws", help="check the AWS set-up; pipeline steps; signed API calls")
    asub = aws.add_subparsers(dest="aws_command", metavar="COMMAND", required=True)

    p = asub.add_parser("check", help="verify credentials, region, bucket, role and image; say what is missing")
    p.add_argument("--json", action="store_true", help="the checklist as JSON")
    p.set_defaults(func=cmd_check)

    p = asub.add_parser("deploy-config", help="write the endpoint stacks' parameter files for the latest approved version")
    p.add_argument("--out-dir", default=".", help="where staging-config.json and prod-config.json go")
    p.add_argument("--instance-type", default=None, help="endpoint instance type (default QCBR_AWS_INSTANCE_TYPE)")
    p.add_argument("--version", type=int, default=None, help="an Approved version (default: the latest)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_deploy_config)

    p = asub.add_parser("smoke-test", help="send cases of the deployed version's dataset to a stage's API")
    p.add_argument("--stack", required=True, help="the endpoint stack, e.g. <project>-staging")
    p.add_argument("--rows", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_smoke_test)

    p = asub.add_parser("call", help="POST a SigV4-signed request to the IAM-authorised API")
    p.add_argument("url", help="e.g. <ApiUrl>/predict or <ApiUrl>/train")
    body = p.add_mutually_exclusive_group(required=True)
    body.add_argument("--json", dest="json_body", metavar="JSON")
    body.add_argument("--csv", metavar="FILE")
    p.add_argument("--region", default=None)
    p.set_defaults(func=cmd_call)

    lam = subparsers.add_parser("lambda", help="the API's Lambda functions")
    lsub = lam.add_subparsers(dest="lambda_command", metavar="COMMAND", required=True)
    p = lsub.add_parser("package", help="build the deterministic Lambda zip (predict, start_training, monitoring schedule)")
    p.add_argument("--out", default=None, help=f"zip path (default {DEFAULT_ZIP})")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_lambda_package)
