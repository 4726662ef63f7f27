#!/usr/bin/env bash
# Build (once) or reuse the llama-cpp-python wheel, then install it and the [server] extras'
# dependencies into the current Python environment ($PYTHON, default: the repo's .venv).
#
# The default build segfaults on machines whose CPUs have AMX, so the wheel is built with
# -DGGML_NATIVE=OFF. pip's wheel cache ignores CMAKE_ARGS, so the build never touches pip's
# cache (--no-cache-dir): the only copy is ours, in $DARS_CACHE/wheels.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if "$PYTHON" - "$LLAMA_CPP_VERSION" <<'PY' 2>/dev/null; then
import sys
import llama_cpp
import llama_cpp.server.app  # noqa: F401  (the [server] extras are importable)
sys.exit(0 if llama_cpp.__version__ == sys.argv[1] else 1)
PY
    log "llama-cpp-python $LLAMA_CPP_VERSION with server already installed in $PYTHON"
    exit 0
fi

mkdir -p "$WHEEL_DIR"
shopt -s nullglob
wheels=("$WHEEL_DIR"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl)
if (( ${#wheels[@]} == 0 )); then
    log "building llama-cpp-python $LLAMA_CPP_VERSION (about 10-20 minutes on 2 cores)"
    CMAKE_ARGS="-DGGML_NATIVE=OFF" "$PYTHON" -m pip wheel --no-deps --no-cache-dir \
        --no-binary llama-cpp-python "llama-cpp-python==$LLAMA_CPP_VERSION" -w "$WHEEL_DIR"
    wheels=("$WHEEL_DIR"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl)
    (( ${#wheels[@]} > 0 )) || die "the build produced no wheel in $WHEEL_DIR"
else
    log "reusing ${wheels[0]}"
fi

# The wheel file itself (never a source build), then its and the server's dependencies.
"$PYTHON" -m pip install --no-cache-dir --only-binary llama-cpp-python "${wheels[0]}[server]"
"$PYTHON" -c "import llama_cpp, llama_cpp.server.app; print('llama-cpp-python', llama_cpp.__version__)"
