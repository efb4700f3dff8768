#!/bin/sh
# A private Docker engine for the tests, entirely under DIR: its own data root, exec root,
# socket, pid file, and its own network namespace (DIR/netns) holding its bridge, its
# containers' networks and its published ports. It can run beside any other engine (or
# another test run) on the same machine, and the host's firewall does not apply to it: a
# host running a standard Docker daemon has the FORWARD policy DROP and sends bridged
# traffic through it (br_netfilter), which would cut containers off from each other. The
# host's firewall and sysctls are never changed; the one sysctl set (ip_forward) is the
# namespace's own.
#
#   engine.sh DIR NAME SUBNET BRIDGE_CIDR ADDRESS_POOL HOST_CIDR ENGINE_CIDR
#
# The namespace hangs off the host on a veth pair: NAME on the host with HOST_CIDR, "uplink"
# in the namespace with ENGINE_CIDR. The host routes SUBNET (everything the engine
# addresses) over it; the namespace knows only that link, so containers reach the host's
# end of it and nothing further. The bridge is "docker0" inside the namespace.
#
# Commands arrive on stdin, one a line: "restart" stops and starts dockerd with the same
# state. End of input (the test finished, or its process died and the pipe closed) tears
# everything down: containers, networks, dockerd, leftover mounts, the namespace with its
# interfaces, and DIR.
set -u
trap '' INT HUP
dir=$1 name=$2 subnet=$3 cidr=$4 pool=$5 outer=$6 inner=$7
export DOCKER_HOST="unix://$dir/docker.sock"
netns=$dir/netns

# Inside the engine's namespace; only the network one, so files and mounts stay shared.
in_ns() { nsenter --net="$netns" "$@"; }

# A namespace held by a bind mount on a file under DIR (no name in /run/netns to leak).
: >"$netns" && unshare --net="$netns" true || exit 1
ip link add "$name" type veth peer name uplink netns "$netns" || exit 1
ip addr add "$outer" dev "$name" && ip link set "$name" up &&
  ip route add "$subnet" via "${inner%/*}" dev "$name" src "${outer%/*}" || exit 1
in_ns ip link set lo up && in_ns ip addr add "$inner" dev uplink && in_ns ip link set uplink up || exit 1
in_ns ip link add docker0 type bridge && in_ns ip addr add "$cidr" dev docker0 && in_ns ip link set docker0 up || exit 1
# Between uplink and the bridges, the namespace routes. Its FORWARD chain is its own: empty.
in_ns sh -c 'echo 1 >/proc/sys/net/ipv4/ip_forward' || exit 1

echo '{}' >"$dir/daemon.json"
# Images and containers in memory: building and deleting thousands of small files
# (node_modules) is many times faster than on disk, and teardown is one unmount.
mkdir -p "$dir/data" && mount -t tmpfs -o size=8g,mode=0711 gbd-data "$dir/data"

start() {
  # A minimal shutdown timeout: test containers stop in about a second anyway. nsenter
  # execs dockerd, so $! is dockerd itself (through in_ns it would be a subshell, and
  # stop would signal that and leave dockerd running).
  nsenter --net="$netns" dockerd --config-file "$dir/daemon.json" --data-root "$dir/data" --exec-root "$dir/exec" \
    --pidfile "$dir/dockerd.pid" -H "$DOCKER_HOST" --bridge docker0 \
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
# The link first: deleting one end deletes both, and the host's route with it, even if a
# straggling process keeps the namespace alive.
ip link del "$name" 2>/dev/null
# Anything the engine left mounted (overlays, network namespaces, the tmpfs), deepest first;
# the last reference to the namespace goes with DIR/netns, and the bridge with it.
awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do
  umount -l "$m" 2>/dev/null
done
rm -rf "$dir"
