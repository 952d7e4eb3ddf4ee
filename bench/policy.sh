#!/usr/bin/env bash
# The cost of a Policy: one gateway, two Routes to the same nginx origin, one plain and
# one behind JWT verification plus a local rate limit (set high enough never to refuse),
# measured side by side with the same load in alternating rounds.
# Run from the repository root: bash bench/policy.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
export PATH="$HOME/.cargo/bin:/usr/sbin:/sbin:$PATH"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-50}

WORK=$(mktemp -d /tmp/portcullis-policy-bench.XXXXXX)
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
    server { listen 127.0.0.1:$P_ORIGIN; location / { return 200 "ok\n"; } }
}
EOF
nginx -p "$WORK/origin" -c "$WORK/origin/nginx.conf" >"$WORK/origin/stdout.log" 2>&1 &
PIDS+=($!)

# An HMAC key in a JWKS, and a token signed with it that expires in an hour.
mkdir -p "$WORK/secrets/jwt-keys"
TOKEN=$(python3 - "$WORK/secrets/jwt-keys/jwks.json" <<'EOF'
import base64, hashlib, hmac, json, os, sys, time
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
key = os.urandom(32)
json.dump({"keys": [{"kty": "oct", "kid": "bench", "alg": "HS256", "k": b64(key)}]}, open(sys.argv[1], "w"))
head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "bench"}).encode())
body = b64(json.dumps({"iss": "bench", "aud": "api", "sub": "user-1", "exp": int(time.time()) + 3600}).encode())
sig = b64(hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest())
print(f"{head}.{body}.{sig}")
EOF
)

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
metadata: {name: guarded}
spec:
  hosts: [guarded.test]
  rules:
  - backends: [{address: '127.0.0.1:$P_ORIGIN'}]
---
apiVersion: portcullis.dev/v1alpha1
kind: Policy
metadata: {name: guard}
spec:
  targetRefs: [{kind: Route, name: guarded}]
  jwt:
    issuer: bench
    audiences: [api]
    keysRef: {name: jwt-keys}
    algorithms: [HS256]
    claimsToHeaders: [{claim: sub, header: x-user}]
  rateLimit: {requests: 1000000, per: 1s, key: {type: Claim, name: sub}}
EOF
"$BIN" serve --config "$WORK/routes.yaml" --secrets-dir "$WORK/secrets" --no-tls \
    --listen "127.0.0.1:$P_GW" --admin "127.0.0.1:$P_ADMIN" --workers 1 --access-log false \
    --idle-timeout 120s --header-read-timeout 120s >"$WORK/gateway.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do
    curl -fs -o /dev/null "http://127.0.0.1:$P_ADMIN/readyz" && break
    sleep 0.1
done
check() { # host [auth]
    local body
    body=$(curl -s -H "Host: $1" ${2:+-H "Authorization: Bearer $2"} "http://127.0.0.1:$P_GW/")
    [[ $body == ok ]] || { echo "$1 answered '$body'" >&2; cat "$WORK/gateway.log" >&2; exit 1; }
}
check plain.test
check guarded.test "$TOKEN"
[[ $(curl -s -o /dev/null -w '%{http_code}' -H 'Host: guarded.test' "http://127.0.0.1:$P_GW/") == 401 ]] \
    || { echo "the guarded route answered without a token" >&2; exit 1; }

# Prints "requests/s p99_ms" of one run.
run() { # host [wrk args...]
    local host=$1 out
    shift
    out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -H "Host: $host" "$@" "http://127.0.0.1:$P_GW/")
    if grep -q 'Non-2xx\|Socket errors' <<<"$out"; then
        echo "wrk reported errors for $host:" >&2
        grep 'Non-2xx\|Socket errors' <<<"$out" >&2
    fi
    awk '/^Requests\/sec/ {r=$2} /^ +99%/ {v=$2; if (v ~ /us$/) p=v/1000; else if (v ~ /ms$/) p=v+0; else p=v*1000} END {printf "%.0f %.2f\n", r, p}' <<<"$out"
}

sum_plain=0 sum_guarded=0 p99_plain=0 p99_guarded=0
for ((round = 1; round <= ROUNDS; round++)); do
    # The same bytes to both Routes, so the difference is the Policy's work alone.
    read -r r p < <(run plain.test -H "Authorization: Bearer $TOKEN")
    echo "round $round plain: $r req/s, p99 $p ms" >&2
    sum_plain=$(awk -v a="$sum_plain" -v b="$r" 'BEGIN{print a+b}')
    p99_plain=$(awk -v a="$p99_plain" -v b="$p" 'BEGIN{print a+b}')
    read -r r p < <(run guarded.test -H "Authorization: Bearer $TOKEN")
    echo "round $round JWT + rate limit: $r req/s, p99 $p ms" >&2
    sum_guarded=$(awk -v a="$sum_guarded" -v b="$r" 'BEGIN{print a+b}')
    p99_guarded=$(awk -v a="$p99_guarded" -v b="$p" 'BEGIN{print a+b}')
done

awk -v sp="$sum_plain" -v sg="$sum_guarded" -v pp="$p99_plain" -v pg="$p99_guarded" -v n="$ROUNDS" 'BEGIN {
    printf "\n%-28s %12s %12s\n", "mean of " n " rounds", "req/s", "p99 (ms)"
    printf "%-28s %12.0f %12.2f\n", "plain route", sp / n, pp / n
    printf "%-28s %12.0f %12.2f\n", "JWT + local rate limit", sg / n, pg / n
    printf "%-28s %11.1f%%\n", "throughput lost", (1 - sg / sp) * 100
}'
