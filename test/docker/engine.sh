#!/bin/sh
# A private Docker engine for the tests, entirely under DIR: its own data root, exec root,
# socket, pid file and bridge, and no iptables or sysctl changes, so it can run beside
# any other engine (or another test run) on the same machine.
#
#   engine.sh DIR BRIDGE BRIDGE_CIDR ADDRESS_POOL
#
# Commands arrive on stdin, one a line: "restart" stops and starts dockerd with the same
# state. End of input (the test finished, or its process died and the pipe closed) tears
# everything down: containers, networks, dockerd, leftover mounts, the bridge and DIR.
set -u
trap '' INT HUP
dir=$1 bridge=$2 cidr=$3 pool=$4
export DOCKER_HOST="unix://$dir/docker.sock"

ip link add "$bridge" type bridge || exit 1
ip addr add "$cidr" dev "$bridge" && ip link set "$bridge" up || exit 1
echo '{}' >"$dir/daemon.json"
# Images and containers in memory: building and deleting thousands of small files
# (node_modules) is many times faster than on disk, and teardown is one unmount.
mkdir -p "$dir/data" && mount -t tmpfs -o size=8g,mode=0711 gbd-data "$dir/data"

start() {
  # A minimal shutdown timeout: test containers stop in about a second anyway.
  dockerd --config-file "$dir/daemon.json" --data-root "$dir/data" --exec-root "$dir/exec" \
    --pidfile "$dir/dockerd.pid" -H "$DOCKER_HOST" --bridge "$bridge" \
    --default-address-pool "base=$pool,size=24" --iptables=false --ip6tables=false \
    --ip-forward=false --ip-masq=false --shutdown-timeout 2 --log-level warn \
    >>"$dir/dockerd.log" 2>&1 &
  pid=$!
}

# dockerd has not exited yet (a zombie has: the wait in stop reaps it).
alive() {
  state=$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)
  [ -n "$state" ] && [ "$state" != Z ]
}

# SIGTERM, then SIGKILL if dockerd is still there after 30 s.
stop() {
  kill -TERM "$pid" 2>/dev/null
  i=0
  while [ $i -lt 300 ] && alive; do
    sleep 0.1
    i=$((i + 1))
  done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid"
}

start
while read -r command; do
  case $command in
  restart)
    stop
    start
    echo restarted
    ;;
  esac
done

# Teardown. Networks are removed through the engine so their bridges go with them.
if timeout 20 docker info >/dev/null 2>&1; then
  ids=$(timeout 20 docker ps -aq)
  [ -n "$ids" ] && timeout 60 docker rm -f $ids >/dev/null 2>&1
  timeout 20 docker network prune -f >/dev/null 2>&1
fi
stop
# Anything the engine left mounted (overlays, network namespaces, the tmpfs), deepest first.
awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do
  umount -l "$m" 2>/dev/null
done
ip link del "$bridge" 2>/dev/null
rm -rf "$dir"
