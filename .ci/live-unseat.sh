# Sourced by the CI checks that need a live unseat (.ci/scim-conformance, .ci/api-conformance):
# `start_unseat NAME` starts `$BIN all` on a free port with a fresh database and AMQP prefix and
# an operator token, waits until it answers, and on exit stops it, deletes its queues and
# exchanges and drops its database. It sets BASE, OPERATOR, WORK (a scratch folder, removed on
# exit) and LOGFILE (unseat's log). Needs BIN and a `log` function.

start_unseat() {
  local name=$1 port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  UNSEAT_DB="unseat_${name//-/_}_$$_$RANDOM"
  UNSEAT_PREFIX="$name-$UNSEAT_DB"
  OPERATOR="op_${name//-/_}_$RANDOM$RANDOM$RANDOM"
  WORK=$(mktemp -d -t "unseat-$name.XXXXXX")
  LOGFILE="$WORK/unseat.log"
  BASE="http://127.0.0.1:$port"
  UNSEAT_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$UNSEAT_DB" \
  UNSEAT_AMQP_PREFIX="$UNSEAT_PREFIX" \
  UNSEAT_ADMIN_TOKEN="$OPERATOR" \
  UNSEAT_LISTEN="127.0.0.1:$port" \
    "$BIN" all >"$LOGFILE" 2>&1 &
  UNSEAT_PID=$!
  trap stop_unseat EXIT
  for _ in $(seq 1 60); do
    curl -fsS "$BASE/healthz" >/dev/null 2>&1 && break
    if ! kill -0 "$UNSEAT_PID" 2>/dev/null; then log "unseat exited; its log:"; cat "$LOGFILE"; exit 1; fi
    sleep 1
  done
  log "unseat all on $BASE, database $UNSEAT_DB"
}

stop_unseat() {
  kill "$UNSEAT_PID" 2>/dev/null && wait "$UNSEAT_PID" 2>/dev/null || true
  # Its quorum queues would otherwise pile up on the broker, run after run.
  UNSEAT_AMQP_PREFIX="$UNSEAT_PREFIX" "$BIN" admin delete-topology --prefix "$UNSEAT_PREFIX" --yes >/dev/null 2>&1 || true
  if command -v psql >/dev/null; then
    psql -q -h 127.0.0.1 -U postgres -c "drop database if exists \"$UNSEAT_DB\" with (force)" postgres >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
