#!/usr/bin/env bash
# Everything the llm test tier and the local demo need: the server and the two model files.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
"$HERE/install_server.sh"
"$HERE/install_models.sh"
