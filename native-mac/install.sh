#!/usr/bin/env bash
# Create native-mac/.venv with MLX, mlx-lm and the shared ktoforge package (no torch, no CUDA).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
if [[ "$(uname -s)" == "Darwin" && "$(uname -m)" != "arm64" ]]; then
  echo "MLX needs Apple silicon (arm64); this Mac is $(uname -m)" >&2; exit 1
fi
"$PYTHON" -m venv "$HERE/.venv"
"$HERE/.venv/bin/pip" install --upgrade pip
"$HERE/.venv/bin/pip" install -r "$HERE/requirements-mac.txt"
"$HERE/.venv/bin/pip" install --no-deps -e "$REPO"
"$HERE/.venv/bin/python" -c 'import mlx.core as mx, ktoforge_mlx.app; print("MLX device:", mx.default_device())'
[[ -f "$HERE/worker.env" ]] || cp "$HERE/worker.env.example" "$HERE/worker.env"
echo "Installed. Edit $HERE/worker.env, then run $HERE/start.sh"
