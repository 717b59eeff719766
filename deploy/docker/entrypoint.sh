#!/bin/sh
# The image's entry point: maps a container command to an `eventops` command.
#
#   serve [ARGS]     eventops serve --host 0.0.0.0 --port 8080 [ARGS]. SageMaker starts the
#                    container as `docker run IMAGE serve`, so with neither --deployment nor
#                    --model-uri the MLflow model that SageMaker unpacks in /opt/ml/model is
#                    served. SAGEMAKER_BIND_TO_PORT, when SageMaker sets it, replaces 8080.
#                    Flags given after `serve` win over these defaults (the last one counts).
#   <eventops command> [ARGS]     eventops <command> [ARGS] (worker, api, db, ...)
#   eventops [ARGS]  the same, spelled out
#   healthcheck      exit 0 when HEALTHCHECK_URL (default: the model server's /ping) answers 2xx
#   anything else    run as given (mlflow server ..., python ..., sh)
set -eu

MODEL_DIR="${SAGEMAKER_MODEL_DIR:-/opt/ml/model}"
# Keep in step with `eventops --help` (tests/deploy/test_deploy_image.py checks it).
EVENTOPS_COMMANDS="version sql run lineage init apply worker demo serve predict drift up config
events db ingest datasets runs models alerts monitors tokens api deploy batch-transform"

names_model() {
    for arg in "$@"; do
        case "$arg" in
            -m | --model-uri | --model-uri=* | -d | --deployment | --deployment=*) return 0 ;;
        esac
    done
    return 1
}

serve() {
    port="${SAGEMAKER_BIND_TO_PORT:-8080}"
    if names_model "$@"; then
        exec eventops serve --host 0.0.0.0 --port "$port" "$@"
    fi
    if [ -f "$MODEL_DIR/MLmodel" ]; then
        exec eventops serve --host 0.0.0.0 --port "$port" --model-uri "$MODEL_DIR" "$@"
    fi
    echo "eventops-entrypoint: serve needs --deployment NAME, --model-uri URI or an MLflow" \
        "model in $MODEL_DIR (no MLmodel file there)" >&2
    exit 64
}

healthcheck() {
    url="${HEALTHCHECK_URL:-http://127.0.0.1:${SAGEMAKER_BIND_TO_PORT:-8080}/ping}"
    if [ "$url" = "none" ]; then
        exit 0
    fi
    exec python -c 'import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=4)' "$url"
}

if [ "$#" -eq 0 ]; then
    set -- serve
fi

case "$1" in
    serve)
        shift
        serve "$@"
        ;;
    healthcheck)
        healthcheck
        ;;
    eventops)
        shift
        exec eventops "$@"
        ;;
    -*)
        exec eventops "$@"
        ;;
esac

for command in $EVENTOPS_COMMANDS; do
    if [ "$1" = "$command" ]; then
        exec eventops "$@"
    fi
done
exec "$@"
