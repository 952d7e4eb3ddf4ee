#!/usr/bin/env bash
# Upstream figures, one gateway and nginx origins on this machine:
#   1. the added cost of each load-balancing algorithm over one fixed address, four
#      origin ports, the same load in alternating rounds;
#   2. the success rate in front of two endpoints, one of which fails half its requests,
#      with and without retries and passive ejection.
# Run from the repository root: bash bench/upstream.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
export PATH="$HOME/.cargo/bin:/usr/sbin:/sbin:$PATH"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
CONNS=${CONNS:-50}

WORK=$(mktemp -d /tmp/portcullis-upstream-bench.XXXXXX)
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

read -r P1 P2 P3 P4 P_FLAKY P_GW P_ADMIN < <(python3 bench/helper.py free-ports 7 20000 30000)

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
    # Half of this port's answers are 503, drawn per request.
    split_clients "\${request_id}" \$flaky { 50% 1; * 0; }
    server { listen 127.0.0.1:$P1; listen 127.0.0.1:$P2; listen 127.0.0.1:$P3; listen 127.0.0.1:$P4;
             location / { return 200 "ok\n"; } }
    server { listen 127.0.0.1:$P_FLAKY;
             location / { if (\$flaky) { return 503 "flaky\n"; } return 200 "ok\n"; } }
}
EOF
nginx -p "$WORK/origin" -c "$WORK/origin/nginx.conf" >"$WORK/origin/stdout.log" 2>&1 &
PIDS+=($!)

FOUR="['127.0.0.1:$P1', '127.0.0.1:$P2', '127.0.0.1:$P3', '127.0.0.1:$P4']"
PAIR="['127.0.0.1:$P1', '127.0.0.1:$P_FLAKY']"
EJECT="healthCheck: {passive: {consecutiveFailures: 2, baseEjectionTime: 2s}}"
RETRY="retry: {attempts: 2, backoff: 1ms}"
route() { # name host rule-yaml
    printf -- '---\napiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {name: %s}\nspec:\n  hosts: [%s]\n  rules:\n  - %s\n' "$1" "$2" "$3"
}
{
    route single single.test "backends: [{address: '127.0.0.1:$P1'}]"
    route rr rr.test "backends: [{addresses: $FOUR}]"
    route lr lr.test "{backends: [{addresses: $FOUR}], loadBalancer: {type: LeastRequest}}"
    route ch ch.test "{backends: [{addresses: $FOUR}], loadBalancer: {type: ConsistentHash, hashOn: {header: x-user}}}"
    route sc sc.test "{backends: [{addresses: $FOUR}], loadBalancer: {sessionCookie: {name: s}}}"
    route flaky-none none.test "backends: [{addresses: $PAIR}]"
    route flaky-retry retry.test "{backends: [{addresses: $PAIR}], $RETRY}"
    route flaky-eject eject.test "backends: [{addresses: $PAIR, $EJECT}]"
    route flaky-both both.test "{backends: [{addresses: $PAIR, $EJECT}], $RETRY}"
} >"$WORK/routes.yaml"

"$BIN" serve --config "$WORK/routes.yaml" --no-tls \
    --listen "127.0.0.1:$P_GW" --admin "127.0.0.1:$P_ADMIN" --workers 1 --access-log false \
    --idle-timeout 120s --header-read-timeout 120s >"$WORK/gateway.log" 2>&1 &
GW=$!
PIDS+=("$GW")
for _ in $(seq 50); do
    curl -fs -o /dev/null "http://127.0.0.1:$P_ADMIN/readyz" && break
    sleep 0.1
done
for host in single rr lr ch sc; do
    body=$(curl -s -H "Host: $host.test" -H 'x-user: u1' "http://127.0.0.1:$P_GW/")
    [[ $body == ok ]] || { echo "$host answered '$body'" >&2; cat "$WORK/gateway.log" >&2; exit 1; }
done

ticks() { local s; s=$(<"/proc/$1/stat"); local -a f; read -r -a f <<<"${s##*) }"; echo $((f[11] + f[12])); }
CLK_TCK=$(getconf CLK_TCK)

# Prints "requests/s gateway_cpu_us_per_request" of one wrk run.
run() { # host [wrk args...]
    local host=$1 before after out
    shift
    before=$(ticks "$GW")
    out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "Host: $host" "$@" "http://127.0.0.1:$P_GW/")
    after=$(ticks "$GW")
    if grep -q 'Non-2xx\|Socket errors' <<<"$out"; then
        echo "wrk reported errors for $host:" >&2
        grep 'Non-2xx\|Socket errors' <<<"$out" >&2
    fi
    awk -v t=$((after - before)) -v hz="$CLK_TCK" '
        /^Requests\/sec/ {r=$2} /requests in/ {n=$1}
        END {printf "%.0f %.1f\n", r, t / hz * 1e6 / n}' <<<"$out"
}

# Every request carries the same headers, so only the algorithm differs.
COMMON=(-H 'x-user: user-42' -H 'Cookie: other=1')
declare -A RPS CPU
ALGOS=(single rr lr ch sc)
for a in "${ALGOS[@]}"; do RPS[$a]=0; CPU[$a]=0; done
for ((round = 1; round <= ROUNDS; round++)); do
    for a in "${ALGOS[@]}"; do
        read -r r c < <(run "$a.test" "${COMMON[@]}")
        echo "round $round $a: $r req/s, $c us gateway CPU/req" >&2
        RPS[$a]=$(awk -v x="${RPS[$a]}" -v y="$r" 'BEGIN{print x+y}')
        CPU[$a]=$(awk -v x="${CPU[$a]}" -v y="$c" 'BEGIN{print x+y}')
    done
done

label() {
    case $1 in
    single) echo "one address (baseline)" ;;
    rr) echo "round robin, 4 endpoints" ;;
    lr) echo "least request (P2C), 4 endpoints" ;;
    ch) echo "consistent hash on a header, 4 endpoints" ;;
    sc) echo "round robin + session cookie, 4 endpoints" ;;
    esac
}
printf '\n%-44s %10s %14s %12s\n' "mean of $ROUNDS rounds, c$CONNS" "req/s" "CPU us/req" "added us"
base=$(awk -v x="${CPU[single]}" -v n="$ROUNDS" 'BEGIN{print x/n}')
for a in "${ALGOS[@]}"; do
    awk -v l="$(label "$a")" -v r="${RPS[$a]}" -v c="${CPU[$a]}" -v n="$ROUNDS" -v b="$base" \
        'BEGIN {printf "%-44s %10.0f %14.1f %+12.1f\n", l, r / n, c / n, c / n - b}'
done

# Success rate: one clean endpoint and one failing half its requests.
success() { # host
    local out
    out=$(wrk -t1 -c10 -d"${DURATION}s" -H "Host: $1" "http://127.0.0.1:$P_GW/")
    awk '/requests in/ {n=$1} /Non-2xx/ {bad=$NF} END {printf "%d %d %.2f\n", n, bad, (n - bad) * 100 / n}' <<<"$out"
}
printf '\n%-44s %10s %10s %10s\n' "endpoint failing half its requests" "requests" "failed" "success %"
for case in none retry eject both; do
    read -r n bad pct < <(success "$case.test")
    case $case in
    none) l="no retries, no ejection" ;;
    retry) l="retries (2, 20 % budget)" ;;
    eject) l="passive ejection (2 failures, 2 s)" ;;
    both) l="retries and ejection" ;;
    esac
    printf '%-44s %10d %10d %10.2f\n' "$l" "$n" "$bad" "$pct"
done
echo "$(nproc) cores shared by the load generator, the gateway and the origin"
