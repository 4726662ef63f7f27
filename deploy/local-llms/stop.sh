#!/usr/bin/env bash
# Stop the servers that start.sh started (by their pid files only). SIGTERM lets a server finish
# its in-flight requests (up to 10 s) before it exits; SIGKILL after 15 s.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

for name in "$EDGE_NAME" "$CLOUD_NAME"; do
    pidfile="$RUN_DIR/$name.pid"
    [[ -f "$pidfile" ]] || continue
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        log "stopped $name (pid $pid)"
    fi
    rm -f "$pidfile"
done
