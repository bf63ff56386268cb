#!/usr/bin/env bash
# Run the Mac worker: a Celery worker on queue `mlx`, one job at a time (solo pool: MLX owns the GPU).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
if [[ -f "$HERE/worker.env" ]]; then
  set -a; source "$HERE/worker.env"; set +a
fi
export KTOFORGE_WORK_DIR="${KTOFORGE_WORK_DIR/#\~/$HOME}" KTOFORGE_MODEL_CACHE_DIR="${KTOFORGE_MODEL_CACHE_DIR/#\~/$HOME}"
: "${KTOFORGE_REDIS_URL:?set KTOFORGE_REDIS_URL in $HERE/worker.env}"
: "${KTOFORGE_WORKER_TOKEN:?set KTOFORGE_WORKER_TOKEN in $HERE/worker.env}"
PY="${KTOFORGE_MLX_PYTHON:-$HERE/.venv/bin/python}"
exec "$PY" -m celery -A ktoforge_mlx.app worker -Q mlx -P solo -n "mlx@%h" --loglevel=INFO
