#!/usr/bin/env bash
# The production topology on one machine, without images or a registry: Redis (appendonly), two web
# replicas and two workers, each its own `agentdesk serve` process. Ctrl-C (or SIGTERM) drains and stops
# them all. Configuration comes from .env / the environment as for `agentdesk serve` (Slack, Teams, model).
#
#   ./scripts/topology.sh            web replicas on :3981 and :3982, workers' health on :3991 and :3992
#
# Point Slack's request URL / the Teams messaging endpoint at a load balancer (or tunnel) in front of both
# web ports; any replica answers any event. Logs: $AGENTDESK_TOPOLOGY_DIR/*.log.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR="${AGENTDESK_TOPOLOGY_DIR:-.agentdesk/topology}"
REDIS_PORT="${REDIS_PORT:-6379}"
AGENTDESK=${AGENTDESK:-.venv/bin/agentdesk}
[ -x "$AGENTDESK" ] || AGENTDESK=agentdesk
mkdir -p "$DIR"
pids=()

say() { echo "[topology] $*"; }

stop_all() {
  say "stopping (each process drains for up to ${AGENTDESK_DRAIN_S:-60} s)"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_all EXIT
trap 'exit 0' INT TERM

if [ -z "${REDIS_URL:-}" ]; then
  command -v redis-server >/dev/null || bash scripts/ensure_redis.sh >/dev/null
  if redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; then
    say "using the Redis already answering on 127.0.0.1:$REDIS_PORT"
  else
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --appendonly yes --dir "$DIR" --save "" \
      >"$DIR/redis.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
    say "Redis on 127.0.0.1:$REDIS_PORT (appendonly, data in $DIR)"
  fi
  export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
fi

start() {  # role port name
  HOST="${HOST:-127.0.0.1}" PORT="$2" AGENTDESK_DATA_DIR="$DIR/$3" "$AGENTDESK" serve --role "$1" \
    >"$DIR/$3.log" 2>&1 &
  pids+=($!)
  say "$3: --role $1 on port $2 (log $DIR/$3.log)"
}
start web 3981 web1
start web 3982 web2
start worker 3991 worker1
start worker 3992 worker2

for port in 3981 3982 3991 3992; do
  for _ in $(seq 1 300); do
    curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.2
  done
  say "port $port: $(curl -s "http://127.0.0.1:$port/readyz" || echo 'not answering')"
done
say "running; Ctrl-C to stop"
wait -n "${pids[@]}" || true
say "a process exited; see $DIR/*.log"
