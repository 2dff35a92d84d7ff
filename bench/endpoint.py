"""Endpoint benchmark: our inference server against MLflow's scoring server, measured in one run.

``python -m bench.endpoint`` fits a QCBRClassifier (zz map, 8 qubits, fixed alpha and k so no
cross-validation runs) on N=10,000 synthetic cases and scikit-learn's KNeighborsClassifier on the
same cases, serves the first with ``python -m qcbr.serving.server`` (data capture on, as in a
deployment) and the second with ``mlflow models serve --env-manager local``, and sends the same
one-row requests to both at 1 and 8 concurrent clients (threads, each with its own client):

- qcbr via boto3: an unmodified ``sagemaker-runtime`` client with ``endpoint_url=`` (how users call it),
- qcbr via the local runtime gateway (boto3 too): the gateway's overhead,
- qcbr via plain HTTP (urllib3, the same client as for MLflow): the like-for-like comparison,
- MLflow via plain HTTP with its own ``dataframe_split`` JSON.

Each target gets a warm-up, then the same number of requests; targets are interleaved per
concurrency level so that load from other processes on the machine hits them alike. It prints a
table, the ratios ours/MLflow (p50, p99, throughput), whether "p50 and p99 no worse than MLflow's"
holds, and the gateway overhead; it exits 1 if any request failed.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SKOPS_TRUSTED = ["sklearn.metrics._dist_metrics.EuclideanDistance64", "sklearn.neighbors._kd_tree.KDTree"]


@dataclass
class Result:
    target: str
    clients: int
    requests: int
    errors: int
    p50: float
    p99: float
    throughput: float
    first_error: str | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ping(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> float:
    import urllib.request

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:4]} exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_load(calls: list[Callable[[int], None]], per_client: int, warmup: int) -> tuple:
    """One thread per client (each with its own connection), warm-up, then ``per_client`` timed calls.

    The clients are built once per target and concurrency level and reused in every round, so
    every timed call runs on a warmed client (a fresh boto3 client's first call costs 1.5-3 ms
    more; a fresh HTTP pool's, a TCP connect)."""
    clients = len(calls)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    ready = threading.Barrier(clients + 1)
    go = threading.Event()

    def worker(w: int) -> None:
        call = calls[w]
        for i in range(warmup):
            try:
                call(w * 7919 + i)
            except Exception as exc:
                errors.append(f"warm-up: {type(exc).__name__}: {exc}")
        ready.wait()
        go.wait()
        lat = latencies[w]
        for i in range(per_client):
            t = time.perf_counter()
            try:
                call(w * 104729 + i)
            except Exception as exc:  # counted, never hidden
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            lat.append(time.perf_counter() - t)

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    t0 = time.perf_counter()
    go.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    all_lat = np.array([x for lat in latencies for x in lat]) * 1000.0
    return all_lat, wall, errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.endpoint", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--qubits", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=0.5, help="fixed zz bandwidth (no CV in the bench)")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--requests", type=int, default=800, help="timed requests per target and concurrency")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds the requests are split into")
    ap.add_argument("--warmup", type=int, default=50, help="untimed requests per client first")
    ap.add_argument("--clients", default="1,8")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (models, capture)")
    args = ap.parse_args(argv)
    levels = [int(c) for c in args.clients.split(",")]

    warnings.filterwarnings("ignore")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    import pandas as pd
    from sklearn.datasets import make_classification

    from qcbr.model import QCBRClassifier

    tmp = Path(tempfile.mkdtemp(prefix="qcbr-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        n_query = 1000
        X, y = make_classification(n_samples=args.cases + n_query, n_features=args.qubits,
                                   n_informative=min(6, args.qubits), n_redundant=0, n_classes=3,
                                   random_state=0)
        cols = [f"f{i}" for i in range(args.qubits)]
        train = pd.DataFrame(X[: args.cases], columns=cols)
        y_train = np.array([f"class_{v}" for v in y[: args.cases]])
        queries = X[args.cases:].round(6).tolist()

        t = time.perf_counter()
        model = QCBRClassifier(feature_map="zz", n_qubits=args.qubits, alpha=args.alpha, k=args.k,
                               random_state=0).fit(train, y_train)
        fit_s = time.perf_counter() - t
        acc_q = float(np.mean(model.predict(pd.DataFrame(X[args.cases:], columns=cols)) ==
                              np.array([f"class_{v}" for v in y[args.cases:]])))
        model.save(tmp / "qcbr-model")

        from sklearn.neighbors import KNeighborsClassifier

        import mlflow.sklearn

        knn = KNeighborsClassifier(n_neighbors=args.k).fit(train, y_train)
        acc_k = float(np.mean(knn.predict(pd.DataFrame(X[args.cases:], columns=cols)) ==
                              np.array([f"class_{v}" for v in y[args.cases:]])))
        mlflow.sklearn.save_model(knn, str(tmp / "mlflow-model"), input_example=train.head(2),
                                  serialization_format="skops", skops_trusted_types=SKOPS_TRUSTED)

        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        bin_dir = Path(sys.executable).parent
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}

        ours_port, gw_port, ml_port = free_port(), free_port(), free_port()
        ours = subprocess.Popen(
            [sys.executable, "-m", "qcbr.serving.server", "--model-dir", str(tmp / "qcbr-model"),
             "--port", str(ours_port), "--endpoint-name", "bench", "--model-version", "1",
             "--capture-root", str(tmp / "capture")], env=env, cwd=ROOT, **quiet)
        procs.append(ours)
        routes = tmp / "routes.json"
        routes.write_text(json.dumps({"bench": f"http://127.0.0.1:{ours_port}"}))
        gw = subprocess.Popen([sys.executable, "-m", "qcbr.serving.gateway", "--port", str(gw_port),
                               "--routes", str(routes)], env=env, cwd=ROOT, **quiet)
        procs.append(gw)
        ml = subprocess.Popen([str(bin_dir / "mlflow"), "models", "serve", "-m", str(tmp / "mlflow-model"),
                               "--env-manager", "local", "-p", str(ml_port), "-h", "127.0.0.1"],
                              env=env, cwd=tmp, **quiet)
        procs.append(ml)
        ours_up = wait_ping(f"http://127.0.0.1:{ours_port}/ping", ours)
        wait_ping(f"http://127.0.0.1:{gw_port}/endpoints/bench/ping", gw)
        ml_up = wait_ping(f"http://127.0.0.1:{ml_port}/ping", ml)

        import boto3
        import urllib3
        from botocore.config import Config

        def boto_target(url: str) -> Callable[[], Callable[[int], None]]:
            def make():
                client = boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1",
                                      config=Config(retries={"max_attempts": 1}, max_pool_connections=4))

                def call(i: int) -> None:
                    body = json.dumps({"instances": [queries[i % n_query]]})
                    r = client.invoke_endpoint(EndpointName="bench", Body=body, ContentType="application/json",
                                               Accept="application/json")
                    out = json.loads(r["Body"].read())
                    if len(out["predictions"]) != 1:
                        raise AssertionError(f"bad answer {out}")
                return call
            return make

        def http_target(url: str, mlflow_format: bool) -> Callable[[], Callable[[int], None]]:
            def make():
                pool = urllib3.HTTPConnectionPool("127.0.0.1", int(url.rsplit(":", 1)[1].split("/")[0]), maxsize=2)
                path = "/invocations"

                def call(i: int) -> None:
                    row = queries[i % n_query]
                    doc = {"dataframe_split": {"columns": cols, "data": [row]}} if mlflow_format else {"instances": [row]}
                    r = pool.request("POST", path, body=json.dumps(doc), headers={"Content-Type": "application/json"})
                    if r.status != 200:
                        raise RuntimeError(f"HTTP {r.status}: {r.data[:200]!r}")
                    if len(json.loads(r.data)["predictions"]) != 1:
                        raise AssertionError(f"bad answer {r.data[:200]!r}")
                return call
            return make

        targets = {
            "qcbr   boto3 direct": boto_target(f"http://127.0.0.1:{ours_port}"),
            "qcbr   boto3 gateway": boto_target(f"http://127.0.0.1:{gw_port}"),
            "qcbr   http  direct": http_target(f"http://127.0.0.1:{ours_port}", False),
            "mlflow http  direct": http_target(f"http://127.0.0.1:{ml_port}", True),
        }
        print(f"data: {args.cases} cases x {args.qubits} features, 3 classes; {n_query} held-out query rows, "
              f"one row per request")
        print(f"qcbr: zz map, {args.qubits} qubits, alpha={args.alpha}, k={args.k}; fit {fit_s:.1f}s; "
              f"held-out accuracy {acc_q:.3f}; server up in {ours_up:.1f}s (data capture on)")
        print(f"mlflow {mlflow.__version__}: KNeighborsClassifier(k={args.k}) via `mlflow models serve "
              f"--env-manager local`; held-out accuracy {acc_k:.3f}; server up in {ml_up:.1f}s")
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f} at start; {args.requests} timed requests "
              f"per row in {args.rounds} interleaved rounds, after {args.warmup} warm-up requests per client\n")

        def server_stats() -> dict:
            import urllib.request

            with urllib.request.urlopen(f"http://127.0.0.1:{ours_port}/info", timeout=10) as r:
                return json.loads(r.read())["stats"]

        results: list[Result] = []
        batch_notes = []
        for clients in levels:
            per_round = max(1, args.requests // (clients * args.rounds))
            lat_acc = {name: [] for name in targets}
            wall_acc = dict.fromkeys(targets, 0.0)
            err_acc: dict[str, list[str]] = {name: [] for name in targets}
            pools = {name: [make() for _ in range(clients)] for name, make in targets.items()}
            before = server_stats()
            for rnd in range(args.rounds):  # interleaved rounds: drifting machine load hits all alike
                for name in targets:
                    lat, wall, errors = run_load(pools[name], per_round, args.warmup if rnd == 0 else 0)
                    lat_acc[name].append(lat)
                    wall_acc[name] += wall
                    err_acc[name] += errors
            after = server_stats()
            n_batches = after["batches"] - before["batches"]
            batch_notes.append(f"{clients} client(s): {after['requests'] - before['requests']} requests to qcbr "
                               f"in {n_batches} model calls "
                               f"(mean batch {(after['rows'] - before['rows']) / max(n_batches, 1):.2f} rows, "
                               f"{after.get('inline', 0) - before.get('inline', 0)} on the event loop)")
            for name in targets:
                lat = np.concatenate(lat_acc[name])
                results.append(Result(
                    name, clients, clients * per_round * args.rounds, len(err_acc[name]),
                    float(np.percentile(lat, 50)) if len(lat) else float("nan"),
                    float(np.percentile(lat, 99)) if len(lat) else float("nan"),
                    len(lat) / wall_acc[name] if wall_acc[name] else 0.0,
                    err_acc[name][0] if err_acc[name] else None))

        header = f"{'target':<22}{'clients':>8}{'requests':>10}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}"
        print(header)
        print("-" * len(header))
        for r in results:
            print(f"{r.target:<22}{r.clients:>8}{r.requests:>10}{r.errors:>8}{r.p50:>9.2f}{r.p99:>9.2f}{r.throughput:>9.0f}")
        by = {(r.target, r.clients): r for r in results}

        print("\nratios ours/MLflow (p50, p99: lower is better; throughput: higher is better)")
        verdicts = []
        for clients in levels:
            theirs = by[("mlflow http  direct", clients)]
            for ours_name in ("qcbr   boto3 direct", "qcbr   http  direct"):
                o = by[(ours_name, clients)]
                print(f"  {clients} client(s), {ours_name.split(None, 1)[1]:<13}: p50 {o.p50 / theirs.p50:.2f}  "
                      f"p99 {o.p99 / theirs.p99:.2f}  throughput {o.throughput / theirs.throughput:.2f}")
            o = by[("qcbr   boto3 direct", clients)]
            verdicts.append((clients, o.p50 <= theirs.p50 and o.p99 <= theirs.p99))
        for clients, ok in verdicts:
            print(f"p50 and p99 no worse than MLflow's at {clients} client(s) (boto3 client vs MLflow over HTTP): "
                  f"{'yes' if ok else 'NO'}")

        print("\ngateway overhead (boto3 via gateway minus boto3 direct)")
        for clients in levels:
            d, g = by[("qcbr   boto3 direct", clients)], by[("qcbr   boto3 gateway", clients)]
            print(f"  {clients} client(s): p50 +{g.p50 - d.p50:.2f} ms, p99 +{g.p99 - d.p99:.2f} ms, "
                  f"throughput x{g.throughput / d.throughput:.2f}")

        print("\nbatching in our server: " + "; ".join(batch_notes))
        captured = sum(p.read_bytes().count(b"\n") for p in (tmp / "capture").rglob("*.jsonl"))
        stop(ours)
        captured_after = sum(p.read_bytes().count(b"\n") for p in (tmp / "capture").rglob("*.jsonl"))
        expected = sum(r.requests for r in results if r.target.startswith("qcbr")) + \
            args.warmup * sum(levels) * 3
        print(f"\ndata capture: {captured_after} records after shutdown (expected {expected}; "
              f"{captured} already on disk while serving)")
        total_errors = sum(r.errors for r in results)
        print(f"errors: {total_errors}")
        for r in results:
            if r.first_error:
                print(f"  {r.target} x{r.clients}: first error: {r.first_error}")
        return 0 if total_errors == 0 and captured_after == expected else 1
    finally:
        for p in procs:
            stop(p)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
