#!/usr/bin/env bash
# Sigil quick start.
#
#   deploy/quickstart.sh          build, start a server and an agent, get your SVID
#   deploy/quickstart.sh --stop   stop both and remove the quick-start directory
#
# Builds sigil-server and sigil-agent (debug), starts the server on its
# embedded store and an agent attested with a fresh join token, both in
# ./.sigil-quickstart on loopback ports, registers an entry for the current
# user (unix:uid), fetches that user's X.509-SVID through the SPIFFE Workload
# API and prints its SPIFFE ID and expiry. Both daemons keep running in the
# background, and the script prints the next commands to try and the metrics
# URLs.
#
# Running it again while a quick start is running stops that pair, removes its
# directory and starts afresh (a new CA, a new agent): each run ends in the
# same known state. --stop stops the pair and removes the directory; it is
# harmless when nothing runs.
#
# Environment:
#   SIGIL_QUICKSTART_DIR  where everything lives (default <repo>/.sigil-quickstart)
#   SIGIL_BIN_DIR         use sigil-server and sigil-agent from this directory
#                         instead of building them (e.g. target/release)
# Needs: cargo (unless SIGIL_BIN_DIR), python3, util-linux (setsid).
set -euo pipefail
# No job control: background children stay in this process group, so setsid
# below calls setsid(2) itself (no fork) and $! is the daemon's pid.
set +m

root=$(cd "$(dirname "$0")/.." && pwd)
dir="${SIGIL_QUICKSTART_DIR:-$root/.sigil-quickstart}"
marker="$dir/.sigil-quickstart"
if [ -n "${SIGIL_BIN_DIR:-}" ]; then
  bin_dir=$(cd "$SIGIL_BIN_DIR" && pwd)
else
  bin_dir="$root/target/debug"
fi
server="$bin_dir/sigil-server"
agent="$bin_dir/sigil-agent"

usage() {
  echo "usage: $0 [--stop]" >&2
  exit 2
}

# Whether pid $1 is a live process (not a zombie left for its new parent to
# reap: the daemons outlive the script that started them).
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

# Stops the daemon whose pid is in $dir/$1.pid, if it is still that daemon
# (the pid's executable is the one we started): SIGTERM, then SIGKILL after
# 10 s.
stop_daemon() {
  local name=$1 pidfile="$dir/$1.pid" pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  case "$pid" in '' | *[!0-9]*) return 0 ;; esac
  alive "$pid" || return 0
  case "$(readlink "/proc/$pid/exe" 2>/dev/null || true)" in
    */sigil-"$name" | */sigil-"$name"" (deleted)") ;;
    *) return 0 ;; # the pid now belongs to another program
  esac
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do
    alive "$pid" || return 0
    sleep 0.1
  done
  echo "sigil-$name (pid $pid) did not stop in 10s; killing it" >&2
  kill -9 "$pid" 2>/dev/null || true
}

# Stops a running quick start and removes its directory. Refuses to delete a
# directory that a quick start did not create.
check_ours() {
  if [ ! -f "$marker" ]; then
    echo "$dir exists but was not made by the quick start (no $marker); not touching it" >&2
    exit 1
  fi
}
stop() {
  [ -e "$dir" ] || return 0
  check_ours
  stop_daemon agent
  stop_daemon server
  rm -rf "$dir"
}

case "${1:-}" in
  --stop)
    [ $# -eq 1 ] || usage
    if [ -e "$dir" ]; then
      stop
      echo "Stopped the quick-start server and agent and removed $dir"
    else
      echo "No quick start is running (no $dir)"
    fi
    exit 0
    ;;
  "") ;;
  -h | --help)
    sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *) usage ;;
esac

if [ -e "$dir" ]; then
  check_ours
  echo "==> Stopping the previous quick start and removing $dir"
  stop
fi

if [ -z "${SIGIL_BIN_DIR:-}" ]; then
  echo "==> Building sigil-server and sigil-agent (the first build takes a few minutes)"
  (cd "$root" && cargo build --quiet -p sigil-server -p sigil-agent --bins)
fi
for b in "$server" "$agent"; do
  [ -x "$b" ] || { echo "missing $b" >&2; exit 1; }
done

mkdir -p "$dir"
: >"$marker"
chmod 755 "$dir"

# Shows the logs and stops what was started when a step fails, so the next
# run starts clean.
failed() {
  local rc=$?
  trap - ERR
  echo >&2
  echo "quick start failed (exit $rc); the last lines of the logs:" >&2
  for p in server agent; do
    if [ -f "$dir/$p.log" ]; then
      echo "--- $dir/$p.log" >&2
      tail -n 20 "$dir/$p.log" >&2
    fi
  done
  stop_daemon agent
  stop_daemon server
  echo "(logs kept in $dir; deploy/quickstart.sh --stop removes it)" >&2
  exit "$rc"
}
trap failed ERR

# Free loopback ports, chosen by the kernel.
read -r agent_port bundle_port server_health agent_health < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')

# Waits up to 20 s for a command to succeed.
wait_for() {
  local what=$1
  shift
  for _ in $(seq 1 200); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "$what did not come up within 20s" >&2
  return 1
}

cat >"$dir/server.toml" <<CFG
trust_domain = "example.org"
data_dir = "$dir/server"
bind_address = "127.0.0.1:$agent_port"
[bundle_endpoint]
address = "127.0.0.1:$bundle_port"
[health]
address = "127.0.0.1:$server_health"
CFG

echo "==> Starting sigil-server (log: $dir/server.log)"
# setsid and no terminal: the daemons outlive this script and the terminal.
setsid "$server" run --config "$dir/server.toml" </dev/null >"$dir/server.log" 2>&1 &
echo $! >"$dir/server.pid"
export SIGIL_ADMIN_SOCKET="$dir/server/admin.sock"
wait_for sigil-server "$server" healthcheck
"$server" healthcheck

"$server" bundle show >"$dir/bundle.pem"
generated=$("$server" token generate --output json)
token=$(printf '%s' "$generated" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
# The agent ID names the token by its hash (token generate prints the path).
agent_id="spiffe://example.org$(printf '%s' "$generated" | python3 -c 'import json,sys; print(json.load(sys.stdin)["agent_id_path"])')"
cat >"$dir/agent.toml" <<CFG
trust_domain = "example.org"
data_dir = "$dir/agent"
server_address = "127.0.0.1:$agent_port"
trust_bundle_path = "$dir/bundle.pem"
socket_path = "$dir/run/agent.sock"
[health]
address = "127.0.0.1:$agent_health"
CFG

echo "==> Starting sigil-agent (log: $dir/agent.log)"
# The token goes through the environment, not the command line (which other
# users can read in /proc).
SIGIL_JOIN_TOKEN="$token" setsid "$agent" run --config "$dir/agent.toml" \
  </dev/null >"$dir/agent.log" 2>&1 &
echo $! >"$dir/agent.pid"
wait_for sigil-agent "$agent" healthcheck --socket "$dir/run/agent.sock"
"$agent" healthcheck --socket "$dir/run/agent.sock"

user=$(id -un)
spiffe_id="spiffe://example.org/user/$user"
echo "==> Registering $spiffe_id for unix:uid:$(id -u) under $agent_id"
"$server" entry create --spiffe-id "$spiffe_id" \
  --parent-id "$agent_id" --selector "unix:uid:$(id -u)" >/dev/null

echo "==> Fetching your X.509-SVID over the Workload API"
export SPIFFE_ENDPOINT_SOCKET="unix://$dir/run/agent.sock"
"$agent" api fetch x509 --timeout 30s --write "$dir/svid"
trap - ERR

cat <<NEXT

Sigil server (pid $(cat "$dir/server.pid")) and agent (pid $(cat "$dir/agent.pid")) are running. Try:
  export SIGIL_ADMIN_SOCKET=$dir/server/admin.sock
  export SPIFFE_ENDPOINT_SOCKET=unix://$dir/run/agent.sock
  $agent api watch                    # SVID and bundle updates as they happen
  $server entry show
  $server agent list
  $server bundle show --format jwks
  openssl x509 -in $dir/svid/svid.pem -noout -text
Metrics (Prometheus text) and health:
  curl -s http://127.0.0.1:$server_health/metrics     # server; /live, /ready
  curl -s http://127.0.0.1:$agent_health/metrics     # agent; /live, /ready
Any SPIFFE library pointed at SPIFFE_ENDPOINT_SOCKET gets the SVID too (the tests run
py-spiffe, Node @grpc/grpc-js and the Rust spiffe crate against this agent; see README, Test).
Stop and clean up with: deploy/quickstart.sh --stop   (running it again starts afresh)
NEXT
