"""The BYOC image without Docker: the Dockerfile's pins, and its entrypoint run directly.

SageMaker starts the container as `IMAGE train` or `IMAGE serve` with /opt/ml mounted; here the
entrypoint script runs on this machine with the /opt/ml root moved to a temp dir (SM_ROOT or
QCBR_OPT_ML, both read by the training entrypoint), which is everything the image adds to the code.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path


from tests.test_aws_helpers import ENTRYPOINT, FAST_HPS, IRIS_ROW, ROOT, ServeContainer, iris_case_base

DOCKERFILE = ROOT / "infra" / "docker" / "Dockerfile"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "QCBR_", "AWS_"))}
    env.update({"PYTHONPATH": str(ROOT), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"})
    env.update(extra)
    return env


def _opt_ml(root: Path, hps: dict[str, str] | None = FAST_HPS) -> Path:
    train = root / "input" / "data" / "train"
    train.mkdir(parents=True)
    cases = iris_case_base()
    (train / "cases.parquet").write_bytes(cases.to_parquet_bytes())
    (train / "schema.json").write_text(json.dumps(cases.schema, default=str))
    if hps is not None:
        (root / "input" / "config").mkdir(parents=True)
        (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hps))
    return root


def test_dockerfile_is_pinned_and_copies_what_exists():
    text = DOCKERFILE.read_text()
    (base,) = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base), base
    assert "pip install -r requirements.txt" in text
    for line in re.findall(r"^COPY\s+(.+)$", text, flags=re.M):
        *sources, _dest = line.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    assert 'ENTRYPOINT ["/usr/local/bin/qcbr-container"]' in text
    assert "COPY infra/docker/entrypoint.sh /usr/local/bin/qcbr-container" in text
    assert "EXPOSE 8080" in text
    ignore = (ROOT / "infra" / "docker" / "Dockerfile.dockerignore").read_text()
    for needed in ("!requirements.txt", "!pyproject.toml", "!qcbr/**", "!infra/docker/entrypoint.sh"):
        assert needed in ignore
    # the image is only as pinned as its requirements
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[\w.]+", line), f"requirements.txt: {line!r} is not pinned"


def test_train_entrypoint_writes_the_model_under_sm_root(tmp_path):
    root = _opt_ml(tmp_path / "opt-ml")
    done = subprocess.run(["bash", str(ENTRYPOINT), "train"], env=_env(SM_ROOT=str(root), TRAINING_JOB_NAME="j1"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    model = root / "model"
    assert {"model.json", "arrays.npz", "MANIFEST.json", "metrics.json", "statistics.json", "constraints.json",
            "model_card.md"} <= {p.name for p in model.iterdir()}
    metrics = json.loads((model / "metrics.json").read_text())
    assert 0.8 < metrics["validation:accuracy"] <= 1.0
    # the line the training job's MetricDefinitions scrape from the log (qcbr.lifecycle.aws.training)
    from qcbr.lifecycle.aws.training import METRIC_DEFINITIONS

    scraped = re.search(METRIC_DEFINITIONS[0]["Regex"], done.stdout)
    assert scraped and abs(float(scraped.group(1)) - metrics["validation:accuracy"]) < 1e-3
    assert not (root / "output" / "failure").exists()
    progress = json.loads((root / "output" / "data" / "progress.json").read_text())
    assert progress["fraction"] == 1.0


def test_train_entrypoint_failure_follows_the_sagemaker_contract(tmp_path):
    """QCBR_OPT_ML moves the root too; a bad hyperparameter -> exit 1 and the reason in output/failure."""
    root = _opt_ml(tmp_path / "opt-ml", hps={"feature_map": "hexagonal"})
    done = subprocess.run(["bash", str(ENTRYPOINT), "train"], env=_env(QCBR_OPT_ML=str(root)),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "feature_map='hexagonal'" in (root / "output" / "failure").read_text()
    assert not (root / "model" / "model.json").exists()


def test_train_and_serve_on_path_like_sagemaker(tmp_path):
    """The image links `train`/`serve` to the script; invoked by that name it needs no argument."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "train").symlink_to(ENTRYPOINT)
    root = tmp_path / "empty-opt-ml"
    root.mkdir()
    done = subprocess.run([str(bin_dir / "train")], env=_env(SM_ROOT=str(root)), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1
    assert "must hold cases.parquet and schema.json" in (root / "output" / "failure").read_text()


def test_unknown_mode_is_a_usage_error():
    done = subprocess.run(["bash", str(ENTRYPOINT), "predict"], env=_env(), capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "usage" in done.stderr and "'predict'" in done.stderr


def test_serve_entrypoint_answers_the_inference_contract(tmp_path):
    root = _opt_ml(tmp_path / "opt-ml")
    trained = subprocess.run(["bash", str(ENTRYPOINT), "train"], env=_env(SM_ROOT=str(root)), capture_output=True,
                             text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr[-2000:]
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted((root / "model").iterdir()):
            tar.add(path, arcname=path.name)
    server = ServeContainer(archive.read_bytes(), tmp_path, model_version="4", endpoint="churn-prod")
    try:
        # the script execs the server: SageMaker's defaults, then the test's later --host/--port win
        argv = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes().decode().split("\0")
        assert argv[1:4] == ["-m", "qcbr.serving.server", "--host"] and argv[4] == "0.0.0.0"
        assert argv[argv.index("--model-dir") + 1] == str(server.root / "model")
        assert argv[argv.index("--model-version") + 1] == "4" and argv[argv.index("--endpoint-name") + 1] == "churn-prod"
        assert argv[len(argv) - 1 - argv[::-1].index("--host") + 1] == "127.0.0.1"
        with urllib.request.urlopen(f"{server.url}/ping", timeout=5) as resp:
            assert resp.status == 200
        status, body = server.invoke(json.dumps({"instances": [IRIS_ROW]}).encode())
        assert status == 200
        answer = json.loads(body)
        assert str(answer["model_version"]) == "4"  # QCBR_MODEL_VERSION -> --model-version
        assert answer["predictions"][0]["label"] == "setosa"
        header = ",".join(IRIS_ROW)
        values = ",".join(str(v) for v in IRIS_ROW.values())
        status, body = server.invoke(f"{header}\n{values}\n".encode(), "text/csv")
        assert status == 200 and json.loads(body)["predictions"][0]["label"] == "setosa"
        status, body = server.invoke(b'{"instances": [{"sepal length (cm)": "tall"}]}')
        assert 400 <= status < 500 and "error" in json.loads(body)
    finally:
        server.close()
    assert server.proc.returncode is not None
