#!/usr/bin/env bash
# Entry point of the qCBR Studio BYOC image. SageMaker starts training containers as
# `docker run IMAGE train` and inference containers as `docker run IMAGE serve`; the image also
# links `train` and `serve` on PATH to this script, so either form works. `monitor` is the
# scheduled monitoring job (a SageMaker Processing job started by the endpoint stack's schedule):
# one `qcbr monitor run` on $QCBR_MONITOR_ENDPOINT with the aws backend.
#
# The /opt/ml root is SageMaker's; SM_ROOT (or QCBR_OPT_ML) moves it, which is how the tests run
# both entry points without Docker. Extra arguments after the mode are passed through, and a
# later --host/--port wins over the defaults (argparse keeps the last value).
set -euo pipefail

mode="${1:-}"
if [ "$(basename "$0")" = train ] || [ "$(basename "$0")" = serve ]; then
  mode="$(basename "$0")"
else
  shift || true
fi

ml_root="${SM_ROOT:-${QCBR_OPT_ML:-/opt/ml}}"
python_bin="${PYTHON:-python}"

case "$mode" in
  train)
    exec "$python_bin" -m qcbr.training.train "$@"
    ;;
  serve)
    args=(--host 0.0.0.0 --port "${SAGEMAKER_BIND_TO_PORT:-8080}" --model-dir "$ml_root/model")
    if [ -n "${QCBR_MODEL_VERSION:-}" ]; then args+=(--model-version "$QCBR_MODEL_VERSION"); fi
    if [ -n "${QCBR_ENDPOINT_NAME:-}" ]; then args+=(--endpoint-name "$QCBR_ENDPOINT_NAME"); fi
    exec "$python_bin" -m qcbr.serving.server "${args[@]}" "$@"
    ;;
  monitor)
    if [ -z "${QCBR_MONITOR_ENDPOINT:-}" ]; then
      echo "monitor: set QCBR_MONITOR_ENDPOINT to the endpoint to monitor" >&2
      exit 2
    fi
    exec "$python_bin" -m qcbr monitor run --endpoint "$QCBR_MONITOR_ENDPOINT" --json "$@"
    ;;
  *)
    echo "usage: $(basename "$0") train|serve|monitor [ARGS...]  (SageMaker passes 'train' or 'serve'; got '${mode}')" >&2
    exit 2
    ;;
esac
