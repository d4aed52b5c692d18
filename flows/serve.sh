#!/usr/bin/env bash
# Start a local Prefect server (SQLite under .prefect/, analytics off) unless PREFECT_API_URL
# points at an existing server, then serve every deployment (flows/serve.py) until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
PORT=${PREFECT_PORT:-4200}
export PREFECT_HOME=${PREFECT_HOME:-$PWD/.prefect}
export PREFECT_SERVER_ANALYTICS_ENABLED=false
mkdir -p "$PREFECT_HOME"
server_pid=""
if [ -z "${PREFECT_API_URL:-}" ]; then
  export PREFECT_API_URL="http://127.0.0.1:${PORT}/api"
  echo "starting Prefect server on 127.0.0.1:${PORT} (log: $PREFECT_HOME/server.log)"
  "$BIN/prefect" server start --host 127.0.0.1 --port "$PORT" >"$PREFECT_HOME/server.log" 2>&1 &
  server_pid=$!
  trap '[ -n "$server_pid" ] && kill $server_pid 2>/dev/null' EXIT
  for _ in $(seq 1 120); do
    curl -sf "$PREFECT_API_URL/health" >/dev/null 2>&1 && break
    kill -0 $server_pid 2>/dev/null || { cat "$PREFECT_HOME/server.log"; exit 1; }
    sleep 0.5
  done
  curl -sf "$PREFECT_API_URL/health" >/dev/null || { echo "Prefect server did not come up"; exit 1; }
else
  echo "using the Prefect server at $PREFECT_API_URL"
fi
echo "serving deployments; in another shell:"
echo "  export PREFECT_API_URL=$PREFECT_API_URL"
echo "  $BIN/prefect deployment run 'pipeline/default' --watch"
exec "$BIN/python" -m flows.serve
