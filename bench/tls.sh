#!/usr/bin/env bash
# HTTPS at the edge, portcullis against nginx: new TLS handshakes per second (every
# request on a new connection) and keep-alive HTTPS throughput, with the same ECDSA
# P-256 certificate, one worker each, in front of the same nginx origin.
# Run from the repository root: bash bench/tls.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
export PATH="$HOME/.cargo/bin:/usr/sbin:/sbin:$PATH"

ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-10}
HANDSHAKE_CONNS=${HANDSHAKE_CONNS:-16}
KEEPALIVE_CONNS=${KEEPALIVE_CONNS:-50}

WORK=$(mktemp -d /tmp/portcullis-tls-bench.XXXXXX)
PIDS=()
cleanup() {
    ((${#PIDS[@]})) && kill "${PIDS[@]}" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

missing=()
command -v nginx >/dev/null || missing+=(nginx-light)
command -v wrk >/dev/null || missing+=(wrk)
command -v openssl >/dev/null || missing+=(openssl)
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/portcullis

read -r P_ORIGIN P_NGINX P_GW P_GW_PLAIN P_ADMIN < <(python3 bench/helper.py free-ports 5 20000 30000)

# One certificate for both, as a renewal tool would write it.
mkdir -p "$WORK/secrets/bench"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
    -keyout "$WORK/secrets/bench/tls.key" -out "$WORK/secrets/bench/tls.crt" 2>/dev/null

nginx_conf() { # dir server-block
    cat <<EOF
worker_processes 1;
daemon off;
user root;
pid $1/nginx.pid;
error_log $1/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
http {
    access_log off;
    client_body_temp_path $1/client_body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
    keepalive_timeout 120s;
    keepalive_requests 10000000;
    $2
}
EOF
}

start_nginx() { # name server-block; sets WORKER to the pid of its one worker
    local dir=$WORK/$1 master
    mkdir -p "$dir"
    nginx_conf "$dir" "$2" >"$dir/nginx.conf"
    nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$dir/stdout.log" 2>&1 &
    master=$!
    PIDS+=("$master")
    WORKER=
    for _ in $(seq 50); do
        WORKER=$(pgrep -P "$master" | head -n1) && [[ -n $WORKER ]] && break
        sleep 0.1
    done
    [[ -n $WORKER ]] || { cat "$dir/error.log" >&2; echo "nginx $1 did not start" >&2; exit 1; }
}

start_nginx origin "server { listen 127.0.0.1:$P_ORIGIN; location / { return 200 \"ok\n\"; } }"
# Resumption off on both sides' defaults that differ: nginx would otherwise resume from
# its cache, and every handshake here is meant to be a full one.
start_nginx proxy "
    upstream origin { server 127.0.0.1:$P_ORIGIN; keepalive 64; keepalive_requests 10000000; }
    server {
        listen 127.0.0.1:$P_NGINX ssl;
        server_name bench.test;
        ssl_certificate $WORK/secrets/bench/tls.crt;
        ssl_certificate_key $WORK/secrets/bench/tls.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache off;
        ssl_session_tickets off;
        location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
    }"
NGINX_WORKER=$WORKER

cat >"$WORK/routes.yaml" <<EOF
apiVersion: portcullis.dev/v1alpha1
kind: Route
metadata: {name: bench}
spec:
  hosts: [bench.test]
  tls:
    certificateRef: {name: bench}
  rules:
  - backends: [{address: '127.0.0.1:$P_ORIGIN'}]
EOF
# wrk connects to an address, so clients name no host: the default certificate answers.
"$BIN" serve --config "$WORK/routes.yaml" --secrets-dir "$WORK/secrets" --default-certificate bench \
    --listen "127.0.0.1:$P_GW_PLAIN" --listen-tls "127.0.0.1:$P_GW" --admin "127.0.0.1:$P_ADMIN" \
    --workers 1 --access-log false --idle-timeout 120s --header-read-timeout 120s \
    >"$WORK/gateway.log" 2>&1 &
GW=$!
PIDS+=("$GW")
for _ in $(seq 50); do
    curl -fsk -o /dev/null -H 'Host: bench.test' "https://127.0.0.1:$P_GW/" && break
    sleep 0.1
done
for port in "$P_NGINX" "$P_GW"; do
    body=$(curl -sk -H 'Host: bench.test' "https://127.0.0.1:$port/")
    [[ $body == ok ]] || { echo "127.0.0.1:$port answered '$body'" >&2; cat "$WORK/gateway.log" >&2; exit 1; }
done

ticks() { local s; s=$(<"/proc/$1/stat"); local -a f; read -r -a f <<<"${s##*) }"; echo $((f[11] + f[12])); }
CLK_TCK=$(getconf CLK_TCK)

# Prints "requests/s cpu_us_per_request" of one wrk run against port $2 with pid $3.
run() { # conns port pid [wrk args...]
    local conns=$1 port=$2 pid=$3 before after out rps reqs
    shift 3
    before=$(ticks "$pid")
    out=$(wrk -t1 -c"$conns" -d"${DURATION}s" -H 'Host: bench.test' "$@" "https://127.0.0.1:$port/")
    after=$(ticks "$pid")
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    if grep -q 'Non-2xx\|Socket errors' <<<"$out"; then
        echo "wrk reported errors against $port:" >&2
        grep 'Non-2xx\|Socket errors' <<<"$out" >&2
    fi
    awk -v r="$rps" -v t=$((after - before)) -v n="$reqs" -v hz="$CLK_TCK" \
        'BEGIN { printf "%.0f %.1f\n", r, t / hz * 1e6 / n }'
}

declare -A RPS CPU
for kind in handshake keepalive; do
    for name in nginx portcullis; do RPS[$kind.$name]=0; CPU[$kind.$name]=0; done
done
for ((round = 1; round <= ROUNDS; round++)); do
    for name in nginx portcullis; do
        if [[ $name == nginx ]]; then port=$P_NGINX pid=$NGINX_WORKER; else port=$P_GW pid=$GW; fi
        read -r r c < <(run "$HANDSHAKE_CONNS" "$port" "$pid" -H 'Connection: close')
        echo "round $round $name new connection per request: $r req/s, $c us CPU/req" >&2
        RPS[handshake.$name]=$(awk -v a="${RPS[handshake.$name]}" -v b="$r" 'BEGIN{print a+b}')
        CPU[handshake.$name]=$(awk -v a="${CPU[handshake.$name]}" -v b="$c" 'BEGIN{print a+b}')
        read -r r c < <(run "$KEEPALIVE_CONNS" "$port" "$pid")
        echo "round $round $name keep-alive: $r req/s, $c us CPU/req" >&2
        RPS[keepalive.$name]=$(awk -v a="${RPS[keepalive.$name]}" -v b="$r" 'BEGIN{print a+b}')
        CPU[keepalive.$name]=$(awk -v a="${CPU[keepalive.$name]}" -v b="$c" 'BEGIN{print a+b}')
    done
done

printf '\n%-44s %12s %12s\n' "HTTPS, mean of $ROUNDS rounds" nginx portcullis
for kind in handshake keepalive; do
    label=$([[ $kind == handshake ]] && echo "new TLS connection per request" || echo "keep-alive")
    printf '%-44s %12.0f %12.0f\n' "$label: req/s" \
        "$(awk -v a="${RPS[$kind.nginx]}" -v n="$ROUNDS" 'BEGIN{print a/n}')" \
        "$(awk -v a="${RPS[$kind.portcullis]}" -v n="$ROUNDS" 'BEGIN{print a/n}')"
    printf '%-44s %12.1f %12.1f\n' "$label: proxy CPU us/req" \
        "$(awk -v a="${CPU[$kind.nginx]}" -v n="$ROUNDS" 'BEGIN{print a/n}')" \
        "$(awk -v a="${CPU[$kind.portcullis]}" -v n="$ROUNDS" 'BEGIN{print a/n}')"
done
echo "$(nproc) cores shared by the load generator, the proxy and the origin"
