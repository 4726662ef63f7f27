#!/usr/bin/env bash
# Make the project's own DARS dataset from two real local models:
#   SmolLM2-135M-Instruct (edge) and Qwen2.5-Coder-0.5B-Instruct (cloud stand-in, also the
#   rewriter) on GSM8K-test and NQ-open prompts, 2 rewrites + the original x 3 decodes each,
# then write its report. Resumable: rerun the same command after a crash, Ctrl-C or an
# exhausted time budget and it continues where it stopped (raise the counts to extend it: the
# seeded shuffle keeps the first N queries of each set the same).
#
# Usage: deploy/local-llms/make_dataset.sh [GSM8K_QUERIES] [NQ_QUERIES] [collector options]
#        (default 20 120), e.g. make_dataset.sh 40 240 --time-budget 55
# Env: DARS_DATA (prompt files, default ../shared/data next to the repo), DARS_DATASET_RUN
# (store directory, default runs/local-dataset), DARS_DATASET_OUT (exported .jsonl.gz),
# DARS_DATASET_REPORT (report .md), DARS_LLM_NICE (default 10).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

n_gsm8k="${1:-20}"
n_nq="${2:-120}"
data="${DARS_DATA:-$REPO/../shared/data}"
run="${DARS_DATASET_RUN:-$REPO/runs/local-dataset}"
out="${DARS_DATASET_OUT:-$REPO/router_models/data/local-smollm2-qwen05b.jsonl.gz}"
report="${DARS_DATASET_REPORT:-$REPO/router_models/reports/local-llm-dataset.md}"
export DARS_LLM_NICE="${DARS_LLM_NICE:-10}"
[[ -f "$data/prompts-gsm8k.jsonl.gz" && -f "$data/prompts-nq-open.jsonl.gz" ]] ||
    die "prompt files not found in $data (set DARS_DATA)"

"$HERE/start.sh" both > /dev/null
mkdir -p "$run"
cat > "$run/config.yaml" <<YAML
out: $run/observations.jsonl
seed: 0
prompts:
  - {path: $data/prompts-gsm8k.jsonl.gz, splits: [test], limit: $n_gsm8k, shuffle_seed: 0, max_tokens: 256}
  - {path: $data/prompts-nq-open.jsonl.gz, limit: $n_nq, shuffle_seed: 0, max_tokens: 32}
models:
  - {name: $EDGE_NAME, base_url: "http://127.0.0.1:$EDGE_PORT/v1", price_in: $EDGE_PRICE_IN,
     price_out: $EDGE_PRICE_OUT, max_concurrency: 1, timeout: 300}
  - {name: $CLOUD_NAME, base_url: "http://127.0.0.1:$CLOUD_PORT/v1", price_in: $CLOUD_PRICE_IN,
     price_out: $CLOUD_PRICE_OUT, max_concurrency: 1, timeout: 300}
rewrite: {k: 2, model: $CLOUD_NAME, temperature: 0.7, max_tokens: 200, attempts: 3, min_similarity: 0.8}
sampling: {n: 3, temperature: 0.7}
YAML

status=0
nice -n "$DARS_LLM_NICE" "$PYTHON" -m router_models.collect --config "$run/config.yaml" \
    --export "$out" "${@:3}" || status=$?
(( status <= 1 )) || exit "$status"  # 1 = some calls failed: still report what is there

"$PYTHON" -m router_models.collect.report "$out" --rewrites "$run/observations.rewrites.jsonl" \
    --k 2 --weak "$EDGE_NAME" --strong "$CLOUD_NAME" --title "A real DARS dataset from two local LLMs" \
    --preamble "$HERE/dataset_report_preamble.md" --out "$report"
log "wrote $out and $report"
