#!/usr/bin/env bash
# Build benchmarks/.venv-peers: the peer servers and the load generator's client,
# installed from PyPI into an environment of their own so that none of them
# leaks into the project's .venv. Idempotent; prints how long it took.
#
#   bash benchmarks/setup_peers.sh [PYTHON]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${1:-python3}"
venv="$here/.venv-peers"
start=$(date +%s)
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
# mcp stays on 1.x: 2.0 removed the WebSocket transport the peer server uses.
"$venv/bin/python" -m pip install --quiet \
    "nextmcp==0.6.0" \
    "websockets==17.*" \
    "uvloop" \
    "wsproto" \
    "picows" \
    "psutil" \
    "mcp[ws]>=1.20,<2" \
    "uvicorn" \
    "starlette" \
    "py-spy"
echo "peers venv ready in $(( $(date +%s) - start )) s: $venv"
"$venv/bin/python" -m pip list 2>/dev/null | grep -iE '^(nextmcp|websockets|uvloop|wsproto|picows|mcp|uvicorn|starlette) '
