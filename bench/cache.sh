#!/usr/bin/env bash
# The worth of a cache hit: one gateway, two Routes to the same nginx origin, one plain
# (every request proxied) and one with a `cache` section (every request after the first
# answered from memory), measured side by side with the same load in alternating
# rounds. The origin's answer is `BODY_BYTES` of text with `Cache-Control: max-age=3600`.
# Run from the repository root: bash bench/cache.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
export PATH="$HOME/.cargo/bin:/usr/sbin:/sbin:$PATH"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-50}
BODY_BYTES=${BODY_BYTES:-1024}

WORK=$(mktemp -d /tmp/portcullis-cache-bench.XXXXXX)
PIDS=()
cleanup() {
    ((${#PIDS[@]})) && kill "${PIDS[@]}" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

missing=()
command -v nginx >/dev/null || missing+=(nginx-light)
command -v wrk >/dev/null || missing+=(wrk)
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/portcullis

read -r P_ORIGIN P_GW P_ADMIN < <(python3 bench/helper.py free-ports 3 20000 30000)

BODY=$(head -c "$BODY_BYTES" /dev/zero | tr '\0' 'x')
mkdir -p "$WORK/origin"
cat >"$WORK/origin/nginx.conf" <<EOF
worker_processes 1;
daemon off;
user root;
pid $WORK/origin/nginx.pid;
error_log $WORK/origin/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    client_body_temp_path $WORK/origin/client_body;
    proxy_temp_path $WORK/origin/proxy;
    fastcgi_temp_path $WORK/origin/fastcgi;
    uwsgi_temp_path $WORK/origin/uwsgi;
    scgi_temp_path $WORK/origin/scgi;
    keepalive_timeout 120s;
    keepalive_requests 10000000;
    server {
        listen 127.0.0.1:$P_ORIGIN;
        location / {
            default_type text/plain;
            add_header Cache-Control "max-age=3600";
            return 200 "$BODY";
        }
    }
}
EOF
nginx -p "$WORK/origin" -c "$WORK/origin/nginx.conf" >"$WORK/origin/stdout.log" 2>&1 &
PIDS+=($!)

cat >"$WORK/routes.yaml" <<EOF
apiVersion: portcullis.dev/v1alpha1
kind: Route
metadata: {name: plain}
spec:
  hosts: [plain.test]
  rules:
  - backends: [{address: '127.0.0.1:$P_ORIGIN'}]
---
apiVersion: portcullis.dev/v1alpha1
kind: Route
metadata: {name: cached}
spec:
  hosts: [cached.test]
  rules:
  - backends: [{address: '127.0.0.1:$P_ORIGIN'}]
---
apiVersion: portcullis.dev/v1alpha1
kind: Policy
metadata: {name: cache}
spec:
  targetRefs: [{kind: Route, name: cached}]
  cache: {}
EOF
"$BIN" serve --config "$WORK/routes.yaml" --no-tls \
    --listen "127.0.0.1:$P_GW" --admin "127.0.0.1:$P_ADMIN" --workers 1 --access-log false \
    --idle-timeout 120s --header-read-timeout 120s >"$WORK/gateway.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do
    curl -fs -o /dev/null "http://127.0.0.1:$P_ADMIN/readyz" && break
    sleep 0.1
done
for host in plain.test cached.test cached.test; do
    body=$(curl -s -H "Host: $host" "http://127.0.0.1:$P_GW/")
    [[ $body == "$BODY" ]] || { echo "$host answered '${body:0:80}'" >&2; cat "$WORK/gateway.log" >&2; exit 1; }
done
status=$(curl -s -o /dev/null -D - -H 'Host: cached.test' "http://127.0.0.1:$P_GW/" | tr -d '\r' | grep -i '^cache-status:')
[[ $status == *"; hit"* ]] || { echo "the cached route did not hit: '$status'" >&2; exit 1; }

# Prints "requests/s p99_ms" of one run.
run() { # host
    local out
    out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -H "Host: $1" "http://127.0.0.1:$P_GW/")
    if grep -q 'Non-2xx\|Socket errors' <<<"$out"; then
        echo "wrk reported errors for $1:" >&2
        grep 'Non-2xx\|Socket errors' <<<"$out" >&2
    fi
    awk '/^Requests\/sec/ {r=$2} /^ +99%/ {v=$2; if (v ~ /us$/) p=v/1000; else if (v ~ /ms$/) p=v+0; else p=v*1000} END {printf "%.0f %.2f\n", r, p}' <<<"$out"
}

sum_plain=0 sum_cached=0 p99_plain=0 p99_cached=0
for ((round = 1; round <= ROUNDS; round++)); do
    read -r r p < <(run plain.test)
    echo "round $round proxied: $r req/s, p99 $p ms" >&2
    sum_plain=$(awk -v a="$sum_plain" -v b="$r" 'BEGIN{print a+b}')
    p99_plain=$(awk -v a="$p99_plain" -v b="$p" 'BEGIN{print a+b}')
    read -r r p < <(run cached.test)
    echo "round $round cache hit: $r req/s, p99 $p ms" >&2
    sum_cached=$(awk -v a="$sum_cached" -v b="$r" 'BEGIN{print a+b}')
    p99_cached=$(awk -v a="$p99_cached" -v b="$p" 'BEGIN{print a+b}')
done

# Every request to the cached Route but the first must have been a hit.
metrics=$(curl -s "http://127.0.0.1:$P_ADMIN/metrics")
hits=$(awk -F' ' '/^portcullis_cache_lookups_total\{result="hit",route="default\/cached"\}/ {print $2}' <<<"$metrics")
misses=$(awk -F' ' '/^portcullis_cache_lookups_total\{result="miss",route="default\/cached"\}/ {print $2}' <<<"$metrics")

awk -v sp="$sum_plain" -v sc="$sum_cached" -v pp="$p99_plain" -v pc="$p99_cached" -v n="$ROUNDS" \
    -v b="$BODY_BYTES" -v h="${hits:-0}" -v m="${misses:-0}" 'BEGIN {
    printf "\n%-28s %12s %12s\n", "mean of " n " rounds, " b " B", "req/s", "p99 (ms)"
    printf "%-28s %12.0f %12.2f\n", "proxied to the origin", sp / n, pp / n
    printf "%-28s %12.0f %12.2f\n", "answered from the cache", sc / n, pc / n
    printf "%-28s %11.2fx\n", "throughput of a hit", sc / sp
    printf "%-28s %12d %12d\n", "cache hits / misses", h, m
}'
