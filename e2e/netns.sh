#!/usr/bin/env bash
# Private network namespace for end-to-end tests. The API server rejects
# loopback addresses in EndpointSlices, so backends and the API server get
# ordinary addresses on the namespace's own `lo`: traffic to them never
# leaves the namespace. Needs root.
#
#   netns.sh up NAME ADDR/PREFIX...   create NAME, bring up lo, add each address
#   netns.sh down NAME                stop what still runs in NAME, delete it
#
# Run things inside with: ip netns exec NAME CMD...
set -euo pipefail

die() { echo "netns: $*" >&2; exit 1; }

cmd_up() {
    [[ $# -ge 1 ]] || die "usage: netns.sh up NAME ADDR/PREFIX..."
    local name="$1" addr
    shift
    [[ $EUID -eq 0 ]] || die "needs root (ip netns)"
    # Re-running `up` on an existing namespace just adds the addresses.
    ip netns list | awk '{print $1}' | grep -qxF "$name" || ip netns add "$name"
    ip -n "$name" link set lo up
    for addr in "$@"; do
        [[ "$addr" == */* ]] || addr="$addr/32"
        ip -n "$name" addr replace "$addr" dev lo
    done
    ip -n "$name" -o addr show dev lo | awk '{print "netns '"$name"': " $4}'
}

cmd_down() {
    [[ $# -eq 1 ]] || die "usage: netns.sh down NAME"
    local name="$1" pids i
    [[ $EUID -eq 0 ]] || die "needs root (ip netns)"
    ip netns list | awk '{print $1}' | grep -qxF "$name" || { echo "netns: $name does not exist"; return 0; }
    # Anything left inside was started by the tests; a deleted namespace
    # would otherwise live on, hidden, as long as those processes do.
    pids="$(ip netns pids "$name" | tr '\n' ' ')"
    if [[ -n "${pids// /}" ]]; then
        echo "netns: terminating leftover processes in $name: $pids" >&2
        # shellcheck disable=SC2086
        kill -TERM $pids 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do # up to 5s
            [[ -z "$(ip netns pids "$name")" ]] && break
            sleep 0.1
        done
        pids="$(ip netns pids "$name" | tr '\n' ' ')"
        # shellcheck disable=SC2086
        [[ -z "${pids// /}" ]] || kill -KILL $pids 2>/dev/null || true
    fi
    ip netns delete "$name"
    echo "netns: deleted $name"
}

case "${1:-}" in
up) shift; cmd_up "$@" ;;
down) shift; cmd_down "$@" ;;
*) sed -n '7,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
