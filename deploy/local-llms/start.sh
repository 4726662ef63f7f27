#!/usr/bin/env bash
# Start SmolLM2-135M (edge) and Qwen2.5-Coder-0.5B (cloud stand-in) as two llama.cpp servers
# (`python -m app.local_models_server`, xllamacpp) on loopback, then print the DARS_* settings
# that point the router service at them:
#
#   eval "$(deploy/local-llms/start.sh)"      # then: dars-router (or uvicorn app.main:app)
#   deploy/local-llms/stop.sh
#
# Usage: start.sh [edge|cloud|both] (default both). Ports: DARS_EDGE_PORT (8101),
# DARS_CLOUD_PORT (8102); threads per server: DARS_LLM_THREADS (1). Logs and pid files go to
# $DARS_CACHE/run. Runs setup first if the server or the models are missing.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

which="${1:-both}"
"$HERE/install_server.sh" >&2
"$HERE/install_models.sh" >&2
mkdir -p "$RUN_DIR"

# start_one NAME FILE PORT
start_one() {
    local name="$1" file="$2" port="$3" pidfile="$RUN_DIR/$1.pid"
    if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        log "$name already running (pid $(cat "$pidfile"), port $port)"
        return 0
    fi
    log "starting $name on 127.0.0.1:$port (log $RUN_DIR/$name.log)"
    # --ctx is shared by the --parallel slots: 2048 tokens per request, as before.
    PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" nohup nice -n "${DARS_LLM_NICE:-0}" \
        "$PYTHON" -m app.local_models_server --model "$file" --alias "$name" --port "$port" \
        --ctx 4096 --parallel 2 --threads "$LLM_THREADS" > "$RUN_DIR/$name.log" 2>&1 &
    echo $! > "$pidfile"
    wait_ready "$port" "$!" 120 || die "$name did not come up; see $RUN_DIR/$name.log"
}

case "$which" in
    edge) start_one "$EDGE_NAME" "$EDGE_FILE" "$EDGE_PORT" ;;
    cloud) start_one "$CLOUD_NAME" "$CLOUD_FILE" "$CLOUD_PORT" ;;
    both)
        start_one "$EDGE_NAME" "$EDGE_FILE" "$EDGE_PORT"
        start_one "$CLOUD_NAME" "$CLOUD_FILE" "$CLOUD_PORT"
        ;;
    *) die "usage: start.sh [edge|cloud|both]" ;;
esac

cat <<ENV
export DARS_EDGE_BASE_URL=http://127.0.0.1:$EDGE_PORT/v1
export DARS_EDGE_MODEL=$EDGE_NAME
export DARS_EDGE_PRICE_INPUT_PER_MTOK=$EDGE_PRICE_IN
export DARS_EDGE_PRICE_OUTPUT_PER_MTOK=$EDGE_PRICE_OUT
export DARS_CLOUD_BASE_URL=http://127.0.0.1:$CLOUD_PORT/v1
export DARS_CLOUD_MODEL=$CLOUD_NAME
export DARS_CLOUD_PRICE_INPUT_PER_MTOK=$CLOUD_PRICE_IN
export DARS_CLOUD_PRICE_OUTPUT_PER_MTOK=$CLOUD_PRICE_OUT
ENV
