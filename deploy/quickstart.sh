#!/usr/bin/env bash
# Sigil quick start: builds sigil-server, starts it on the embedded store in
# ./.sigil-quickstart, registers an entry for the current user, mints an
# X.509-SVID for it and prints its SPIFFE ID and expiry. The server keeps
# running; `deploy/quickstart.sh --stop` stops it and removes the directory.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir="${SIGIL_QUICKSTART_DIR:-$root/.sigil-quickstart}"
bin="$root/target/debug/sigil-server"

stop() {
  if [ -f "$dir/server.pid" ] && kill -0 "$(cat "$dir/server.pid")" 2>/dev/null; then
    kill "$(cat "$dir/server.pid")"
    for _ in $(seq 1 50); do kill -0 "$(cat "$dir/server.pid")" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$dir"
}

if [ "${1:-}" = "--stop" ]; then
  stop
  echo "Stopped the quick-start server and removed $dir"
  exit 0
fi
# A second run starts afresh.
stop

echo "==> Building sigil-server (first build takes a few minutes)"
(cd "$root" && cargo build --quiet -p sigil-server)

mkdir -p "$dir"
bundle_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
agent_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$dir/server.toml" <<CFG
trust_domain = "example.org"
data_dir = "$dir/data"
bind_address = "127.0.0.1:$agent_port"
[bundle_endpoint]
address = "127.0.0.1:$bundle_port"
CFG

echo "==> Starting sigil-server (log: $dir/server.log)"
"$bin" run --config "$dir/server.toml" >"$dir/server.log" 2>&1 &
echo $! >"$dir/server.pid"
export SIGIL_ADMIN_SOCKET="$dir/data/admin.sock"
for _ in $(seq 1 100); do
  "$bin" healthcheck >/dev/null 2>&1 && break
  sleep 0.1
done
"$bin" healthcheck

uid=$(id -u)
user=$(id -un)
echo "==> Registering spiffe://example.org/user/$user for unix:uid:$uid"
"$bin" entry create --spiffe-id "spiffe://example.org/user/$user" \
  --parent-id "spiffe://example.org/sigil/agent/join_token/quickstart" \
  --selector "unix:uid:$uid"

echo "==> Minting an X.509-SVID into $dir/svid"
"$bin" x509 mint --spiffe-id "spiffe://example.org/user/$user" --write "$dir/svid"

cat <<NEXT

Sigil server is running (pid $(cat "$dir/server.pid")). Try:
  export SIGIL_ADMIN_SOCKET=$dir/data/admin.sock
  $bin entry show
  $bin bundle show --format jwks
  $bin token generate
  curl -sk https://127.0.0.1:$bundle_port/    # the bundle endpoint
Stop and clean up with: deploy/quickstart.sh --stop
NEXT
