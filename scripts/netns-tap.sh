#!/usr/bin/env bash
# A network namespace with a TAP device inside, for usertcp's TAP examples
# and end-to-end tests. Nothing outside the namespace is touched: the
# kernel's side of the TAP is 198.18.0.1/24 (the benchmark range,
# RFC 2544), usertcp's stack takes 198.18.0.2 on the same TAP.
#
#   scripts/netns-tap.sh up              # create (idempotent)
#   scripts/netns-tap.sh exec CMD ARGS   # run CMD inside the namespace
#   scripts/netns-tap.sh down            # remove everything (idempotent)
#   scripts/netns-tap.sh status          # show the namespace's links/addrs
#
# USERTCP_NETNS (default "usertcp") and USERTCP_TAP (default "tap0") name
# the namespace and the device; the tests use a unique namespace each.
#
# A usertcp program attaches to the TAP from inside the namespace
# (TUNSETIFF looks names up in the caller's namespace):
#   scripts/netns-tap.sh exec cargo run --example http_server -- --tap tap0
set -euo pipefail

NS=${USERTCP_NETNS:-usertcp}
TAP=${USERTCP_TAP:-tap0}
KERNEL_ADDR=198.18.0.1/24

usage() {
    echo "usage: $0 up|down|status|exec CMD [ARGS...]" >&2
    exit 2
}

need_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "netns-tap.sh: must run as root (it creates a network namespace and a TAP device); try: sudo $0 $*" >&2
        exit 1
    fi
    if [ ! -c /dev/net/tun ]; then
        echo "netns-tap.sh: /dev/net/tun is missing (no TUN/TAP support here)" >&2
        exit 1
    fi
}

ns_exists() {
    ip netns list 2>/dev/null | awk '{print $1}' | grep -qxF "$NS"
}

up() {
    if ! ns_exists; then
        ip netns add "$NS"
    fi
    ip -n "$NS" link set lo up
    if ! ip -n "$NS" link show "$TAP" >/dev/null 2>&1; then
        ip -n "$NS" tuntap add dev "$TAP" mode tap
    fi
    ip -n "$NS" addr replace "$KERNEL_ADDR" dev "$TAP"
    ip -n "$NS" link set "$TAP" up
    echo "namespace $NS: $TAP with the kernel at $KERNEL_ADDR; usertcp takes 198.18.0.2"
}

down() {
    if ns_exists; then
        ip -n "$NS" link del "$TAP" 2>/dev/null || true
        ip netns del "$NS"
        echo "namespace $NS removed"
    else
        echo "namespace $NS: not there, nothing to remove"
    fi
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case "$cmd" in
    up) need_root "$cmd"; up ;;
    down) need_root "$cmd"; down ;;
    status) need_root "$cmd"; ip -n "$NS" addr show ;;
    exec)
        [ $# -ge 1 ] || usage
        need_root "$cmd"
        if ! ns_exists; then
            echo "netns-tap.sh: namespace $NS does not exist; run '$0 up' first" >&2
            exit 1
        fi
        exec ip netns exec "$NS" "$@"
        ;;
    *) usage ;;
esac
