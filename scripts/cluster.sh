#!/usr/bin/env bash
# A local three-node RabbitMQ cluster (rq1, rq2, rq3 @localhost) BESIDE the system broker, which keeps
# 127.0.0.1:5672 and is never touched here: for the tests that kill a node under a quorum queue, and for
# demos of a broker that loses a machine (issue 14 item 2).
#
#   scripts/cluster.sh [start]     start what is down, join nodes 2 and 3 to node 1, print the URLs
#   scripts/cluster.sh stop        stop the three nodes gracefully (their state stays: the next start is warm)
#   scripts/cluster.sh status      each node's pid and ports, and the cluster as node 1 sees it
#   scripts/cluster.sh kill N      SIGKILL node N's Erlang VM (a machine that dies, for tests)
#   scripts/cluster.sh restart N   start node N again, wait until it runs and is back in the cluster
#   scripts/cluster.sh stop-node N rabbitmqctl stop on node N (a graceful shutdown)
#   scripts/cluster.sh clean       stop the nodes and delete their state: the next start is cold
#
# Idempotent: `start` on a running, clustered cluster only prints the URLs; with a node down it starts
# that node alone. On success `start` prints, on stdout, one line a node (node 1 first):
#   BUS_CLUSTER_NODE=amqp://guest:guest@127.0.0.1:5681/
# then the management API of node 1 (`bus amqp-users` makes AMQP agencies' users there, for the cluster):
#   BUS_CLUSTER_MANAGEMENT=http://127.0.0.1:15681
# Everything else (==> progress, errors) goes to stderr. One invocation at a time changes the cluster
# (a lock). State, logs and crash dumps: $BUS_CLUSTER_DIR (default /var/tmp/bus-rabbit-cluster)/rqN.
# A node that does not come up within $BUS_CLUSTER_START_TIMEOUT s (120) fails the script with its log.
#
# How the nodes differ from the system broker (Debian's rabbitmq-server 3.10):
# - each has its own node name, ports, data, logs, feature-flags, pid and plugins files, and its own
#   rabbitmq.conf: the system-wide /etc/rabbitmq/rabbitmq.conf pins the listener to 5672 and would win
#   over RABBITMQ_NODE_PORT;
# - they run as the rabbitmq user with HOME=/var/lib/rabbitmq, like the system broker, so they read its
#   Erlang cookie (/var/lib/rabbitmq/.erlang.cookie). rabbitmqctl, run as root or through sudo, is
#   Debian's wrapper: it switches to the rabbitmq user with `su` and reads the same cookie. Nothing to
#   copy, and root's ~/.erlang.cookie is never used;
# - the server script is started without that wrapper, as the rabbitmq user through setpriv: `su`
#   (its pam_limits) would drop the open-files limit to 1024;
# - `rabbitmq-server -detached` starts a second VM that does not see these variables, so the server is
#   started in the foreground in a session of its own (setsid), its console going to a log file;
# - quorum queues are in the core; the management plugin (it costs start-up time) runs on node 1 only,
#   on 127.0.0.1:15681 (15672 is the system broker's), for `bus amqp-users`: users and permissions are
#   the cluster's, whichever node they are made through. Nodes 2 and 3 have no plugin.
set -euo pipefail

BASE=${BUS_CLUSTER_DIR:-/var/tmp/bus-rabbit-cluster}
START_TIMEOUT=${BUS_CLUSTER_START_TIMEOUT:-120}  # seconds, for the slowest node
ALL=(1 2 3)

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'cluster.sh: %s\n' "$*" >&2; exit 1; }
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"

node_name() { printf 'rq%s@localhost' "$1"; }
amqp_port() { printf '%s' $((5680 + $1)); }
dist_port() { printf '%s' $((25680 + $1)); }
MANAGEMENT_NODE=1
MANAGEMENT_PORT=15681
node_dir() { printf '%s/rq%s' "$BASE" "$1"; }
url() { printf 'amqp://guest:guest@127.0.0.1:%s/' "$(amqp_port "$1")"; }

ctl() {  # ctl N ARGS...: rabbitmqctl against node N
  local n=$1; shift
  $sudo rabbitmqctl -q -n "$(node_name "$n")" "$@"
}
ctl_quiet() {  # ctl_quiet N ARGS...: rabbitmqctl, its output (warnings included) shown only if it fails
  local out
  if out=$(ctl "$@" 2>&1); then return 0; fi
  printf '%s\n' "$out" >&2
  return 1
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

check_node_arg() {
  case "${1:-}" in
    1 | 2 | 3) ;;
    *) die "expected a node number 1, 2 or 3, got '${1:-}'" ;;
  esac
}

ensure_installed() {
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    say "installing rabbitmq-server"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq rabbitmq-server >/dev/null
    command -v rabbitmq-server >/dev/null 2>&1 || die "rabbitmq-server is still not on PATH after installing it"
  fi
  # The server script itself, behind Debian's user-switching wrapper (/usr/sbin/rabbitmq-server).
  SERVER=/usr/lib/rabbitmq/bin/rabbitmq-server
  [ -x "$SERVER" ] || die "$SERVER not found: this script expects Debian's rabbitmq-server package"
  RABBIT_HOME=$(getent passwd rabbitmq | cut -d: -f6)
  [ -n "$RABBIT_HOME" ] || die "no rabbitmq user"
}

# The OS pid of node N's Erlang VM, or nothing. The VM's command line does not carry the node name
# (3.10 names the node at boot), so a pid is accepted only if its environment names the node.
is_node_pid() {
  local pid=$1 n=$2
  [ -n "$pid" ] && [ -e "/proc/$pid/environ" ] || return 1
  [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || return 1  # killed, not yet reaped
  $sudo cat "/proc/$pid/environ" 2>/dev/null | tr '\0' '\n' | grep -qx "RABBITMQ_NODENAME=$(node_name "$n")"
}
beam_pid() {
  local n=$1 pid
  pid=$(cat "$(node_dir "$n")/pid" 2>/dev/null || true)
  if is_node_pid "$pid" "$n"; then printf '%s' "$pid"; return 0; fi
  for pid in $(pgrep -x beam.smp 2>/dev/null || true); do  # a stale or missing pid file
    if is_node_pid "$pid" "$n"; then printf '%s' "$pid"; return 0; fi
  done
  return 0
}
# Up: its VM runs and its AMQP listener is open (RabbitMQ opens listeners at the end of its boot).
node_up() { [ -n "$(beam_pid "$1")" ] && port_open "$(amqp_port "$1")"; }

# Node N's view of the cluster, from `cluster_status --formatter json`: KEY is running_nodes or disk_nodes.
cluster_list() {  # cluster_list N KEY -> node names, one a line
  ctl "$1" cluster_status --formatter json 2>/dev/null |
    grep -o "\"$2\":\[[^]]*\]" | grep -o 'rq[0-9]*@localhost\|rabbit@[A-Za-z0-9.-]*' || true
}

show_log_tail() {
  local n=$1 dir
  dir=$(node_dir "$n")
  for f in "$dir/log/$(node_name "$n").log" "$dir/console.log"; do
    [ -s "$f" ] || continue
    printf -- '--- last lines of %s ---\n' "$f" >&2
    tail -n 30 "$f" >&2
  done
}
fail_node() {  # fail_node N MESSAGE
  say "$2"
  show_log_tail "$1"
  die "node $(node_name "$1") did not come up (state in $(node_dir "$1"); if that state is stale, \
scripts/cluster.sh clean deletes it and the next start is cold)"
}

prepare_node() {
  local n=$1 dir
  dir=$(node_dir "$n")
  $sudo mkdir -p "$dir/mnesia" "$dir/log"
  {
    printf 'listeners.tcp.local = 127.0.0.1:%s\nloopback_users.guest = true\n' "$(amqp_port "$n")"
    if [ "$n" = "$MANAGEMENT_NODE" ]; then
      printf 'management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = %s\n' "$MANAGEMENT_PORT"
    fi
  } | $sudo tee "$dir/rabbitmq.conf" >/dev/null
  if [ "$n" = "$MANAGEMENT_NODE" ]; then
    printf '[rabbitmq_management].\n' | $sudo tee "$dir/enabled_plugins" >/dev/null
  else
    printf '[].\n' | $sudo tee "$dir/enabled_plugins" >/dev/null
  fi
  $sudo chown -R rabbitmq:rabbitmq "$dir"
}

launch_node() {
  local n=$1 dir port
  dir=$(node_dir "$n")
  port=$(amqp_port "$n")
  if port_open "$port"; then
    die "port $port is taken by another process: node $(node_name "$n") cannot listen there"
  fi
  prepare_node "$n"
  say "starting $(node_name "$n") on 127.0.0.1:$port (log: $dir/log)"
  printf '\n=== %s starting %s\n' "$(date -Is)" "$(node_name "$n")" | $sudo tee -a "$dir/console.log" >/dev/null
  # As the rabbitmq user, like the system broker, but not through Debian's wrapper: it switches user
  # with `su`, whose pam_limits drops the open-files limit to 1024. setpriv (no PAM) keeps the limit
  # this shell sets; HOME is the rabbitmq user's, so the node reads the cookie every rabbitmqctl uses.
  # setsid -f: the node leaves this script's session and process group, so it outlives the script and
  # a Ctrl-C in the caller's terminal; all its descriptors go to the log, none to the caller's pipes,
  # and it does not inherit this script's lock (fd 9), which it would hold for as long as it runs.
  # shellcheck disable=SC2016
  $sudo sh -c '
    log=$1; cd "$2"; shift 2
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    exec setsid -f setpriv --reuid rabbitmq --regid rabbitmq --init-groups "$@" >>"$log" 2>&1 </dev/null 9>&-
  ' sh "$dir/console.log" "$dir" env HOME="$RABBIT_HOME" USER=rabbitmq LOGNAME=rabbitmq \
    ERL_CRASH_DUMP="$dir/log/erl_crash.dump" \
    RABBITMQ_NODENAME="$(node_name "$n")" \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$port" \
    RABBITMQ_DIST_PORT="$(dist_port "$n")" \
    RABBITMQ_MNESIA_BASE="$dir/mnesia" \
    RABBITMQ_LOG_BASE="$dir/log" \
    RABBITMQ_FEATURE_FLAGS_FILE="$dir/feature_flags" \
    RABBITMQ_PID_FILE="$dir/pid" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
    RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
    "$SERVER"
}

wait_node() {  # wait_node N DEADLINE(epoch s) LAUNCHED(0/1): until rabbitmqctl await_startup succeeds
  local n=$1 deadline=$2 launched=$3 started=$SECONDS
  while :; do
    # await_startup fails at once while the node is not yet registered with epmd, hence the loop.
    if ctl "$n" await_startup --timeout 10 >/dev/null 2>&1; then
      say "$(node_name "$n") is running"
      return 0
    fi
    if [ -z "$(beam_pid "$n")" ]; then
      if [ "$launched" -eq 0 ]; then
        # The VM found at the start was a node halting (after `rabbitmqctl stop`), not booting.
        launch_node "$n"
        launched=1
        started=$SECONDS
      elif [ $((SECONDS - started)) -ge 10 ]; then
        fail_node "$n" "$(node_name "$n")'s Erlang VM exited during boot"
      fi
    fi
    [ "$(date +%s)" -lt "$deadline" ] || fail_node "$n" "$(node_name "$n") is not running after ${START_TIMEOUT} s"
    sleep 1
  done
}

wait_gone() {  # wait_gone N SECONDS: until node N's VM has exited
  local n=$1 pid
  for _ in $(seq 1 "$2"); do
    pid=$(beam_pid "$n")
    [ -n "$pid" ] || return 0
    sleep 1
  done
  die "$(node_name "$n") is still running (pid $pid) after $2 s"
}

join_node() {  # join node N (2 or 3) to node 1's cluster, unless it is a member already
  local n=$1
  if cluster_list "$n" disk_nodes | grep -qx "$(node_name 1)"; then return 0; fi
  say "joining $(node_name "$n") to $(node_name 1)"
  ctl_quiet "$n" stop_app
  ctl_quiet "$n" reset  # a node joins empty: drop whatever it had alone
  if ! ctl "$n" join_cluster "$(node_name 1)" >/dev/null 2>&1; then
    # Node 1 may still list this node from an earlier life (its state was deleted): forget it, retry.
    ctl 1 forget_cluster_node "$(node_name "$n")" >/dev/null 2>&1 || true
    ctl_quiet "$n" join_cluster "$(node_name 1)" || {
      ctl "$n" start_app >/dev/null 2>&1 || true
      die "$(node_name "$n") could not join $(node_name 1)"
    }
  fi
  ctl_quiet "$n" start_app
}

print_urls() {
  for n in "${ALL[@]}"; do printf 'BUS_CLUSTER_NODE=%s\n' "$(url "$n")"; done
  printf 'BUS_CLUSTER_MANAGEMENT=http://127.0.0.1:%s\n' "$MANAGEMENT_PORT"
}

# Node 1 started by an earlier version of this script runs without its management plugin: a node reads
# its plugins and rabbitmq.conf at boot only, so it is restarted once (the other two keep the cluster).
ensure_management() {
  local n=$MANAGEMENT_NODE
  port_open "$MANAGEMENT_PORT" && return 0
  say "restarting $(node_name "$n") for its management plugin (127.0.0.1:$MANAGEMENT_PORT)"
  ctl_quiet "$n" stop
  wait_gone "$n" 60
  cmd_restart "$n"
  for _ in $(seq 1 30); do port_open "$MANAGEMENT_PORT" && return 0; sleep 1; done
  show_log_tail "$n"
  die "$(node_name "$n")'s management API is not listening on 127.0.0.1:$MANAGEMENT_PORT"
}

# Start every node that is down, all at once (a node that was clustered waits at boot for its peers,
# so they must not start one after the other), then wait for them and join the fresh ones.
start_nodes() {  # start_nodes N...
  local n starting=() launched=() deadline
  for n in "$@"; do
    if node_up "$n"; then continue; fi
    if [ -n "$(beam_pid "$n")" ]; then
      say "$(node_name "$n") is booting or halting (pid $(beam_pid "$n"))"
      launched+=(0)
    else
      launch_node "$n"
      launched+=(1)
    fi
    starting+=("$n")
  done
  deadline=$(($(date +%s) + START_TIMEOUT))
  for i in "${!starting[@]}"; do wait_node "${starting[$i]}" "$deadline" "${launched[$i]}"; done
  return 0
}

cmd_start() {
  ensure_installed
  $sudo mkdir -p "$BASE"
  local t0=$SECONDS
  start_nodes "${ALL[@]}"
  join_node 2
  join_node 3
  ensure_management
  local running
  running=$(cluster_list 1 running_nodes | sort | tr '\n' ' ')
  [ "$running" = "rq1@localhost rq2@localhost rq3@localhost " ] ||
    die "the cluster is not whole: node 1 sees running nodes: ${running:-none}"
  say "cluster of 3 nodes running (${running% }) in $((SECONDS - t0)) s"
  print_urls
}

cmd_stop() {
  local n
  for n in 3 2 1; do
    if [ -z "$(beam_pid "$n")" ]; then say "$(node_name "$n") is not running"; continue; fi
    say "stopping $(node_name "$n")"
    ctl "$n" stop >/dev/null 2>&1 || true
  done
  for n in "${ALL[@]}"; do wait_gone "$n" 60; done
}

cmd_status() {
  local n pid state
  for n in "${ALL[@]}"; do
    pid=$(beam_pid "$n")
    if [ -z "$pid" ]; then state=down; elif port_open "$(amqp_port "$n")"; then state=up; else state=booting; fi
    printf '%-14s %-8s pid=%-8s amqp=%s dist=%s%s rss=%s\n' "$(node_name "$n")" "$state" "${pid:--}" \
      "$(amqp_port "$n")" "$(dist_port "$n")" \
      "$([ "$n" = "$MANAGEMENT_NODE" ] && printf ' management=%s' "$MANAGEMENT_PORT")" \
      "$([ -n "$pid" ] && awk '/VmRSS/ {printf "%d MB", $2 / 1024}' "/proc/$pid/status" 2>/dev/null || echo -)"
  done
  for n in "${ALL[@]}"; do
    node_up "$n" || continue
    printf 'running nodes as %s sees them: %s\n' "$(node_name "$n")" \
      "$(cluster_list "$n" running_nodes | tr '\n' ' ')"
    printf 'cluster members (disk nodes): %s\n' "$(cluster_list "$n" disk_nodes | tr '\n' ' ')"
    break
  done
}

cmd_kill() {
  local n=$1 pid
  pid=$(beam_pid "$n")
  if [ -z "$pid" ]; then say "$(node_name "$n") is not running"; return 0; fi
  say "SIGKILL $(node_name "$n") (pid $pid)"
  $sudo kill -KILL "$pid"
  for _ in $(seq 1 50); do is_node_pid "$pid" "$n" || return 0; sleep 0.1; done
  die "$(node_name "$n") (pid $pid) is still alive after SIGKILL"
}

cmd_restart() {
  local n=$1 t0=$SECONDS expected running p
  start_nodes "$n"
  # Back in the cluster: it sees as running every node whose VM runs (itself included). A node
  # killed with SIGKILL remembers its cluster and rejoins by itself; a node that was never joined is.
  if [ "$n" != 1 ] && node_up 1; then join_node "$n"; fi
  local deadline=$(($(date +%s) + 60))
  while :; do
    expected=""
    for p in "${ALL[@]}"; do [ -n "$(beam_pid "$p")" ] && expected+="$(node_name "$p") "; done
    running=$(cluster_list "$n" running_nodes | sort | tr '\n' ' ')
    [ "$running" = "$expected" ] && break
    [ "$(date +%s)" -lt "$deadline" ] ||
      fail_node "$n" "$(node_name "$n") sees running nodes '${running% }', expected '${expected% }'"
    sleep 1
  done
  say "$(node_name "$n") is back in the cluster (${running% }) after $((SECONDS - t0)) s"
}

cmd_stop_node() {
  local n=$1
  if [ -z "$(beam_pid "$n")" ]; then say "$(node_name "$n") is not running"; return 0; fi
  say "stopping $(node_name "$n")"
  ctl "$n" stop >/dev/null
  wait_gone "$n" 60  # rabbitmqctl stop returns when RabbitMQ has stopped, before the VM has exited
}

cmd_clean() {
  cmd_stop
  say "deleting $BASE"
  $sudo rm -rf "$BASE"
}

# One scripts/cluster.sh at a time changes the cluster: two test runs starting it at once would both
# launch a node, or join one twice. The lock is beside the state, so that `clean` can delete the state.
lock() {
  if { exec 9>>"$BASE.lock"; } 2>/dev/null; then
    if ! flock -n 9; then
      say "waiting for another scripts/cluster.sh (lock $BASE.lock)"
      flock -w 600 9 || die "another scripts/cluster.sh has held $BASE.lock for 10 min"
    fi
  fi
}
case "${1:-start}" in
  start | stop | kill | restart | stop-node | clean) lock ;;
esac

case "${1:-start}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  kill) check_node_arg "${2:-}"; cmd_kill "$2" ;;
  restart) check_node_arg "${2:-}"; ensure_installed; cmd_restart "$2" ;;
  stop-node) check_node_arg "${2:-}"; cmd_stop_node "$2" ;;
  clean) cmd_clean ;;
  -h | --help | help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (start, stop, status, kill N, restart N, stop-node N, clean)" ;;
esac
