#!/usr/bin/env bash
# Install xllamacpp (llama.cpp with its native OpenAI-compatible HTTP server) into $PYTHON
# (default: the repo's .venv), at the version pyproject.toml's `local` extra pins: a prebuilt
# manylinux CPU wheel from PyPI, no compiler, a few seconds. Idempotent: the pinned version is
# kept. `python -m app.local_models_server` is its command line.
# It replaces the llama-cpp-python source build (8-12 minutes on 2 cores, -DGGML_NATIVE=OFF to
# dodge an AMX segfault) that the scripts used before.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if "$PYTHON" - "$XLLAMACPP_VERSION" <<'PY' 2>/dev/null; then
import sys
import xllamacpp
sys.exit(0 if xllamacpp.__version__ == sys.argv[1] else 1)
PY
    log "xllamacpp $XLLAMACPP_VERSION already installed in $PYTHON"
    exit 0
fi

log "installing xllamacpp $XLLAMACPP_VERSION (prebuilt wheel) into $PYTHON"
"$PYTHON" -m pip install --quiet --only-binary xllamacpp "$XLLAMACPP_REQUIREMENT"
"$PYTHON" -c "import xllamacpp; print('xllamacpp', xllamacpp.__version__)"
