#!/usr/bin/env bash
# Sigil quick start: builds sigil-server and sigil-agent, starts both on the
# embedded store in ./.sigil-quickstart, attests the agent with a join token,
# registers an entry for the current user, and fetches that user's X.509-SVID
# through the SPIFFE Workload API, printing its SPIFFE ID and expiry. Both
# daemons keep running; `deploy/quickstart.sh --stop` stops them and removes
# the directory. A second run starts afresh.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir="${SIGIL_QUICKSTART_DIR:-$root/.sigil-quickstart}"
server="$root/target/debug/sigil-server"
agent="$root/target/debug/sigil-agent"

stop() {
  for p in agent server; do
    if [ -f "$dir/$p.pid" ] && kill -0 "$(cat "$dir/$p.pid")" 2>/dev/null; then
      kill "$(cat "$dir/$p.pid")"
      for _ in $(seq 1 50); do kill -0 "$(cat "$dir/$p.pid")" 2>/dev/null || break; sleep 0.1; done
    fi
  done
  rm -rf "$dir"
}

if [ "${1:-}" = "--stop" ]; then
  stop
  echo "Stopped the quick-start server and agent and removed $dir"
  exit 0
fi
stop

echo "==> Building sigil-server and sigil-agent (the first build takes a few minutes)"
(cd "$root" && cargo build --quiet -p sigil-server -p sigil-agent)

mkdir -p "$dir"
chmod 755 "$dir"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
agent_port=$(port)
bundle_port=$(port)
cat > "$dir/server.toml" <<CFG
trust_domain = "example.org"
data_dir = "$dir/server"
bind_address = "127.0.0.1:$agent_port"
[bundle_endpoint]
address = "127.0.0.1:$bundle_port"
CFG

echo "==> Starting sigil-server (log: $dir/server.log)"
"$server" run --config "$dir/server.toml" >"$dir/server.log" 2>&1 &
echo $! >"$dir/server.pid"
export SIGIL_ADMIN_SOCKET="$dir/server/admin.sock"
for _ in $(seq 1 100); do "$server" healthcheck >/dev/null 2>&1 && break; sleep 0.1; done
"$server" healthcheck

"$server" bundle show >"$dir/bundle.pem"
token=$("$server" token generate --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
agent_id="spiffe://example.org/sigil/agent/join_token/$token"
cat > "$dir/agent.toml" <<CFG
trust_domain = "example.org"
data_dir = "$dir/agent"
server_address = "127.0.0.1:$agent_port"
trust_bundle_path = "$dir/bundle.pem"
socket_path = "$dir/run/agent.sock"
CFG

echo "==> Starting sigil-agent (log: $dir/agent.log)"
"$agent" run --config "$dir/agent.toml" --join-token "$token" >"$dir/agent.log" 2>&1 &
echo $! >"$dir/agent.pid"
for _ in $(seq 1 100); do "$agent" healthcheck --socket "$dir/run/agent.sock" >/dev/null 2>&1 && break; sleep 0.1; done
"$agent" healthcheck --socket "$dir/run/agent.sock"

user=$(id -un)
echo "==> Registering spiffe://example.org/user/$user for unix:uid:$(id -u) under $agent_id"
"$server" entry create --spiffe-id "spiffe://example.org/user/$user" \
  --parent-id "$agent_id" --selector "unix:uid:$(id -u)" >/dev/null

echo "==> Fetching your X.509-SVID over the Workload API"
export SPIFFE_ENDPOINT_SOCKET="unix://$dir/run/agent.sock"
"$agent" api fetch x509 --timeout 30s --write "$dir/svid"

cat <<NEXT

Sigil server (pid $(cat "$dir/server.pid")) and agent (pid $(cat "$dir/agent.pid")) are running. Try:
  export SIGIL_ADMIN_SOCKET=$dir/server/admin.sock
  export SPIFFE_ENDPOINT_SOCKET=unix://$dir/run/agent.sock
  $agent api watch                    # SVID updates as they happen
  $server entry show
  $server agent list
  $server bundle show --format jwks
Any SPIFFE library pointed at SPIFFE_ENDPOINT_SOCKET gets the SVID too.
Stop and clean up with: deploy/quickstart.sh --stop
NEXT
