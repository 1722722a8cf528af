#!/usr/bin/env bash
# The main job on one machine: ZooKeeper (Debian package) on loopback, simcloud serving two
# clouds, and the launcher keeping the demo's min-ready nodes; ends by showing `nodepool list`.
#
#   tools/demo.sh          set up (idempotent), (re)start everything, wait for ready nodes
#   tools/demo.sh stop     stop the demo's processes (by their pid files)
#   tools/demo.sh status   show what runs, and `nodepool list`
#
# Everything lives under ./state/demo (logs, pid files, ZooKeeper data, clouds.yaml).
# Re-running restarts cleanly: the old processes are stopped by pid file and the demo starts
# from empty ZooKeeper data, so no node record outlives the simulated servers it described.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=state/demo
VENV=${NODEPOOL_VENV:-.venv}
CONFIG=etc/nodepool-demo.yaml
SIM_CONFIG=etc/simcloud-demo.yaml
CLOUDS_YAML=$STATE/clouds.yaml
# Fixed, because etc/nodepool-demo.yaml names it.
ZK_PORT=22181
READY_TIMEOUT=${NODEPOOL_DEMO_TIMEOUT:-180}

ZK_CLASSPATH=/etc/zookeeper/conf:/usr/share/java/zookeeper.jar:/usr/share/java/zookeeper-jute.jar:/usr/share/java/slf4j-api.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar:/usr/share/java/netty.jar

say() { echo "demo: $*" >&2; }

running() {  # running NAME -> true if the pid in NAME.pid is alive
    local pidfile=$STATE/$1.pid
    [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

stop_one() {  # stop_one NAME: TERM the recorded pid, wait, KILL if it lingers
    local pidfile=$STATE/$1.pid pid
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        say "stopping $1 (pid $pid)"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            say "$1 did not stop in 10s; killing it"
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile"
}

stop_all() {
    stop_one launcher
    stop_one simcloud
    stop_one zookeeper
}

log_tails() {
    for name in zookeeper simcloud launcher; do
        if [ -f "$STATE/$name.log" ]; then
            echo "---- last lines of $STATE/$name.log" >&2
            tail -n 25 "$STATE/$name.log" >&2
        fi
    done
}

fail() {
    say "error: $*"
    log_tails
    if running zookeeper || running simcloud || running launcher; then
        say "the processes are left running for inspection; stop them with: tools/demo.sh stop"
    fi
    exit 1
}

port_in_use() {
    "$VENV/bin/python" - "$1" <<'EOF'
import socket, sys
s = socket.socket()
# Like ZooKeeper itself: connections in TIME_WAIT from a previous run do not block the port.
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
sys.exit(1)
EOF
}

zk_ok() {
    "$VENV/bin/python" - "$ZK_PORT" <<'EOF'
import socket, sys
try:
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.5) as s:
        s.sendall(b"ruok")
        sys.exit(0 if s.recv(4) == b"imok" else 1)
except OSError:
    sys.exit(1)
EOF
}

start_zookeeper() {
    if port_in_use "$ZK_PORT"; then
        fail "port $ZK_PORT on 127.0.0.1 is taken by another program; the demo needs it"
    fi
    rm -rf "$STATE/zookeeper"
    mkdir -p "$STATE/zookeeper"
    cat > "$STATE/zookeeper/zoo.cfg" <<EOF
dataDir=$PWD/$STATE/zookeeper
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat,mntr
tickTime=500
maxSessionTimeout=60000
EOF
    say "starting ZooKeeper on 127.0.0.1:$ZK_PORT"
    nohup java -Xmx64m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -Dzookeeper.root.logger=WARN,CONSOLE -cp "$ZK_CLASSPATH" \
        org.apache.zookeeper.server.quorum.QuorumPeerMain "$STATE/zookeeper/zoo.cfg" \
        > "$STATE/zookeeper.log" 2>&1 < /dev/null &
    echo $! > "$STATE/zookeeper.pid"
    for _ in $(seq 1 300); do
        zk_ok && return 0
        running zookeeper || fail "ZooKeeper exited"
        sleep 0.1
    done
    fail "ZooKeeper did not answer ruok within 30s"
}

start_simcloud() {
    rm -f "$CLOUDS_YAML"
    say "starting simcloud ($SIM_CONFIG)"
    nohup "$VENV/bin/nodepool-simcloud" --config "$SIM_CONFIG" --clouds-yaml "$CLOUDS_YAML" \
        > "$STATE/simcloud.log" 2>&1 < /dev/null &
    echo $! > "$STATE/simcloud.pid"
    for _ in $(seq 1 300); do
        [ -s "$CLOUDS_YAML" ] && return 0
        running simcloud || fail "simcloud exited"
        sleep 0.1
    done
    fail "simcloud did not write $CLOUDS_YAML within 30s"
}

start_launcher() {
    say "starting nodepool-launcher -c $CONFIG"
    nohup "$VENV/bin/nodepool-launcher" -f -c "$CONFIG" --clouds-yaml "$PWD/$CLOUDS_YAML" \
        > "$STATE/launcher.log" 2>&1 < /dev/null &
    echo $! > "$STATE/launcher.pid"
}

# Prints "<ready>/<wanted>" for the labels with min-ready; exit 0 once every label has enough.
check_ready() {
    "$VENV/bin/nodepool" -c "$CONFIG" --json list 2>/dev/null | "$VENV/bin/python" -c '
import json, sys, yaml
want = {l["name"]: l.get("min-ready", 0) for l in yaml.safe_load(open(sys.argv[1]))["labels"]}
ready = {}
for node in json.load(sys.stdin):
    if node["state"] == "ready":
        for label in node["label"]:
            ready[label] = ready.get(label, 0) + 1
have = sum(min(ready.get(k, 0), n) for k, n in want.items())
print(f"{have}/{sum(want.values())}")
sys.exit(0 if all(ready.get(k, 0) >= n for k, n in want.items()) else 1)
' "$CONFIG"
}

wait_ready() {
    local deadline=$((SECONDS + READY_TIMEOUT)) progress="" last=""
    say "waiting up to ${READY_TIMEOUT}s for the min-ready nodes"
    while true; do
        if progress=$(check_ready); then
            say "min-ready nodes are ready ($progress)"
            return 0
        fi
        if [ "$progress" != "$last" ] && [ -n "$progress" ]; then
            say "ready nodes: $progress"
            last=$progress
        fi
        running launcher || fail "nodepool-launcher exited"
        running simcloud || fail "simcloud exited"
        running zookeeper || fail "ZooKeeper exited"
        [ $SECONDS -lt $deadline ] || fail "min-ready nodes not ready within ${READY_TIMEOUT}s (${progress:-no nodes})"
        sleep 1
    done
}

case "${1:-start}" in
    stop)
        stop_all
        say "stopped"
        exit 0
        ;;
    status)
        for name in zookeeper simcloud launcher; do
            if running "$name"; then echo "$name: running (pid $(cat "$STATE/$name.pid"))"
            else echo "$name: stopped"; fi
        done
        running zookeeper && "$VENV/bin/nodepool" -c "$CONFIG" list
        exit 0
        ;;
    start) ;;
    *)
        echo "usage: tools/demo.sh [start|stop|status]" >&2
        exit 2
        ;;
esac

bash tools/setup-env.sh
mkdir -p "$STATE"
stop_all
start_zookeeper
start_simcloud
start_launcher
wait_ready
echo
echo "\$ $VENV/bin/nodepool -c $CONFIG list"
"$VENV/bin/nodepool" -c "$CONFIG" list
echo
say "status page: http://127.0.0.1:28005/ (tables: /node-list, JSON: /node-list.json)"
say "a node through the REST API: NODEPOOL_API_URL=http://127.0.0.1:28005/api/v1 \\"
say "  NODEPOOL_API_TOKEN=demo-token-not-a-secret $VENV/bin/nodepool request-create cirros-small --wait"
say "stop everything with: tools/demo.sh stop"
