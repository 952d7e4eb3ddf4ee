#!/usr/bin/env bash
# Compares portcullis with nginx as a reverse proxy in front of the same nginx origin:
# throughput, added latency, CPU per request and memory per idle connection.
# Run from the repository root: bash bench/compare.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
BENCH=$ROOT/bench
HELPER=(python3 "$BENCH/helper.py")
export PATH="$HOME/.cargo/bin:/usr/sbin:/sbin:$PATH"

ROUNDS=${ROUNDS:-2}
WRK_DURATION=${WRK_DURATION:-10}
WRK_CONNS=${WRK_CONNS:-50}
WARMUP=${WARMUP:-2}
OHA_RATE=${OHA_RATE:-1000}
OHA_DURATION=${OHA_DURATION:-10}
OHA_CONNS=${OHA_CONNS:-50}
IDLE_CONNS=${IDLE_CONNS:-2000}
ROUTES=${ROUTES:-10000}
QUIET_WAIT=${QUIET_WAIT:-30}
OTHER_WARN_PCT=${OTHER_WARN_PCT:-10}

PIDS=()
WARNINGS=()
WORK=$(mktemp -d /tmp/portcullis-bench.XXXXXX)

log() { printf '== [%3ds] %s\n' "$SECONDS" "$*" >&2; }
warn() { WARNINGS+=("$*"); printf 'WARNING: %s\n' "$*" >&2; }

alive_any() {
    local pid
    for pid in "$@"; do
        kill -0 "$pid" 2>/dev/null && return 0
    done
    return 1
}

cleanup() {
    local rc=$? i
    touch "$WORK/stop-idle" 2>/dev/null || true
    if ((${#PIDS[@]})); then
        kill -TERM "${PIDS[@]}" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            alive_any "${PIDS[@]}" || break
            sleep 0.1
        done
        kill -KILL "${PIDS[@]}" 2>/dev/null || true
    fi
    if ((rc == 0)) && [[ -z ${KEEP_TMP:-} ]]; then
        rm -rf "$WORK"
    else
        echo "logs and configs kept in $WORK" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- tools ----------------------------------------------------------------------------

apt_missing=()
command -v nginx >/dev/null || apt_missing+=(nginx-light)
command -v wrk >/dev/null || apt_missing+=(wrk)
if ((${#apt_missing[@]})); then
    log "installing ${apt_missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_missing[@]}"
fi
if ! command -v oha >/dev/null; then
    log "installing oha (cargo install, takes a few minutes once)"
    cargo install oha --locked
fi
for tool in nginx wrk oha python3 curl ss; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

BIN=$ROOT/target/release/portcullis
log "cargo build --release"
if ! cargo build --release --quiet; then
    [[ -x $BIN ]] || exit 1
    warn "cargo build --release failed; benchmarking the existing $BIN"
fi

OHA_VERSION=$(oha --version 2>/dev/null | head -n1)
OHA_HELP=$(oha --help 2>&1)
for flag in --no-tui --latency-correction -q -z; do
    grep -q -- "$flag" <<<"$OHA_HELP" || { echo "this oha lacks $flag" >&2; exit 1; }
done
# The JSON flag changed between oha versions.
if grep -q -- '--output-format' <<<"$OHA_HELP"; then
    OHA_JSON=(--output-format json)
elif grep -q -- '--json' <<<"$OHA_HELP"; then
    OHA_JSON=(--json)
else
    echo "this oha has no JSON output" >&2
    exit 1
fi
OHA_EXTRA=()
OHA_HOST_FLAG=(-H)
grep -q -- '--host <' <<<"$OHA_HELP" && OHA_HOST_FLAG=(--host)
# Requests still in flight at the deadline count as errors unless oha waits for them.
grep -q -- '--wait-ongoing-requests-after-deadline' <<<"$OHA_HELP" && OHA_EXTRA+=(-w)
# One load thread leaves the other core to the proxy and the origin.
grep -q -- '--worker-threads' <<<"$OHA_HELP" && OHA_EXTRA+=(--worker-threads 1)

# Idle connections need one descriptor each in the helper and in the proxy.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if (($(ulimit -n) < IDLE_CONNS + 256)); then
    echo "ulimit -n $(ulimit -n) is too low for $IDLE_CONNS idle connections" >&2
    exit 1
fi
CLK_TCK=$(getconf CLK_TCK)
MANY=portcullis-$ROUTES

# --- processes ------------------------------------------------------------------------

read -r P_BACKEND P_NGINX P_GW P_GW_ADMIN P_GWMANY P_GWMANY_ADMIN \
    < <("${HELPER[@]}" free-ports 6 20000 30000)
[[ -n ${P_GWMANY_ADMIN:-} ]] || { echo "no free ports" >&2; exit 1; }

wait_url() { # url seconds pid [host]
    local url=$1 secs=$2 pid=$3 host=${4:-localhost} i
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 1
        curl -fsS -o /dev/null --max-time 1 -H "Host: $host" "$url" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}


start_nginx() { # name template port; sets NGINX_MASTER and the array NGINX_WORKERS
    local name=$1 tmpl=$2 port=$3 dir=$WORK/$1
    mkdir -p "$dir"
    sed -e "s#@DIR@#$dir#g" -e "s#@PORT@#$port#g" -e "s#@BACKEND_PORT@#$P_BACKEND#g" \
        "$tmpl" >"$dir/nginx.conf"
    nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$dir/stdout.log" 2>&1 &
    NGINX_MASTER=$!
    PIDS+=("$NGINX_MASTER")
    if ! wait_url "http://127.0.0.1:$port/" 20 "$NGINX_MASTER"; then
        cat "$dir/stdout.log" "$dir/error.log" >&2 || true
        echo "$name did not start" >&2
        exit 1
    fi
    mapfile -t NGINX_WORKERS < <(pgrep -P "$NGINX_MASTER")
    ((${#NGINX_WORKERS[@]})) || { echo "$name has no worker" >&2; exit 1; }
    # Workers are killed too, should the master not stop them.
    PIDS+=("${NGINX_WORKERS[@]}")
}

start_gateway() { # name config port admin; sets GW_PID
    local name=$1 config=$2 port=$3 admin=$4 started=$SECONDS
    "$BIN" serve --config "$config" --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin" \
        --workers 1 --access-log false --drain-period 1s \
        --header-read-timeout 120s --idle-timeout 120s >"$WORK/$name.log" 2>&1 &
    GW_PID=$!
    PIDS+=("$GW_PID")
    if ! wait_url "http://127.0.0.1:$admin/readyz" 90 "$GW_PID"; then
        tail -n 20 "$WORK/$name.log" >&2 || true
        echo "$name did not become ready" >&2
        exit 1
    fi
    log "$name ready after $((SECONDS - started))s"
}

stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

check_ok() { # label port
    local body
    body=$(curl -sS --max-time 5 -H "Host: $REQ_HOST" "http://127.0.0.1:$2$REQ_PATH") || true
    [[ $body == ok ]] || { echo "$1 answered '${body}' instead of ok" >&2; exit 1; }
}

# --- measurements ---------------------------------------------------------------------

cpu_ticks() { # pids...: utime+stime summed, in clock ticks
    local total=0 pid stat
    local -a f
    for pid in "$@"; do
        stat=$(<"/proc/$pid/stat")
        read -r -a f <<<"${stat##*) }"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

rss_kb() { # pids...: resident set summed
    local total=0 pid kb
    for pid in "$@"; do
        # smaps_rollup walks the page tables; VmRSS can lag by per-CPU counter batches.
        kb=$(awk '/^Rss:/ {print $2}' "/proc/$pid/smaps_rollup")
        total=$((total + kb))
    done
    echo "$total"
}

# /proc/stat: busy ticks (tasks, including softirq), steal ticks, all ticks; summed over CPUs.
sys_ticks() {
    local _c u n s i w irq sirq st _rest
    read -r _c u n s i w irq sirq st _rest </proc/stat
    echo "$((u + n + s + irq + sirq)) $st $((u + n + s + i + w + irq + sirq + st))"
}

# This shell and its waited-for children (wrk, helpers): utime stime cutime cstime.
self_ticks() {
    local stat
    local -a f
    stat=$(<"/proc/$$/stat")
    read -r -a f <<<"${stat##*) }"
    echo $((f[11] + f[12] + f[13] + f[14]))
}

NCPU=$(nproc)

upstream_conns() { # pids...: their established connections to the origin
    local pattern label=${label:-proxy}
    pattern=$(printf 'pid=%s,|' "$@")
    ss -Htnp state established "( dport = :$P_BACKEND )" >"$WORK/ss-$label-$ROUND.txt" || true
    grep -cE "${pattern%|}" "$WORK/ss-$label-$ROUND.txt" || true
}

# Start and end of a measured window. Sets P_DELTA and B_DELTA (proxy and origin CPU
# ticks), OTHER and STEAL (% of a core used by other processes and by the hypervisor).
window_start() { # proxy-pids...
    W_P0=$(cpu_ticks "$@")
    W_B0=$(cpu_ticks "${BACKEND_WORKERS[@]}")
    W_S0=$(self_ticks)
    read -r W_BUSY0 W_STEAL0 W_ALL0 < <(sys_ticks)
}
window_end() { # label proxy-pids...
    local label=$1 busy1 steal1 all1 s1 all
    shift
    read -r busy1 steal1 all1 < <(sys_ticks)
    P_DELTA=$(($(cpu_ticks "$@") - W_P0))
    B_DELTA=$(($(cpu_ticks "${BACKEND_WORKERS[@]}") - W_B0))
    s1=$(self_ticks)
    all=$((all1 - W_ALL0 + 1))
    # Busy CPU that neither the proxy, the origin nor the load generator used.
    OTHER=$(((busy1 - W_BUSY0 - P_DELTA - B_DELTA - (s1 - W_S0)) * 100 * NCPU / all))
    # Tick sampling can leave it a little below zero.
    ((OTHER >= 0)) || OTHER=0
    STEAL=$(((steal1 - W_STEAL0) * 100 * NCPU / all))
    ((OTHER <= OTHER_WARN_PCT)) ||
        warn "$label: other processes used ${OTHER}% of a core during the run"
    ((STEAL <= OTHER_WARN_PCT)) ||
        warn "$label: the hypervisor stole ${STEAL}% of a core during the run"
}

declare -A REQS RPS_SUM TICKS BTICKS RUNS
run_wrk() { # label port proxy-pids...
    local label=$1 port=$2
    shift 2
    local url="http://127.0.0.1:$port$REQ_PATH" out="$WORK/wrk-$label-$ROUND.txt"
    local req rps non2xx sockerr upstream wrk_pid
    timeout -k 5 $((WARMUP + 30)) wrk -t1 -c"$WRK_CONNS" -d"${WARMUP}s" \
        -H "Host: $REQ_HOST" "$url" >/dev/null
    window_start "$@"
    timeout -k 5 $((WRK_DURATION + 30)) wrk -t1 -c"$WRK_CONNS" -d"${WRK_DURATION}s" \
        -H "Host: $REQ_HOST" "$url" >"$out" &
    wrk_pid=$!
    PIDS+=("$wrk_pid")
    # Pooled connections are counted mid-run: at the end, requests cut off by wrk take
    # their upstream connections with them.
    sleep $((WRK_DURATION / 2))
    upstream=$(upstream_conns "$@")
    wait "$wrk_pid"
    window_end "$label round $ROUND" "$@"
    read -r req rps non2xx sockerr < <("${HELPER[@]}" wrk-summary "$out")
    ((non2xx == 0)) || warn "$label round $ROUND: $non2xx non-2xx responses under wrk"
    ((sockerr == 0)) || warn "$label round $ROUND: $sockerr socket errors under wrk"
    REQS[$label]=$((${REQS[$label]:-0} + req))
    TICKS[$label]=$((${TICKS[$label]:-0} + P_DELTA))
    BTICKS[$label]=$((${BTICKS[$label]:-0} + B_DELTA))
    RPS_SUM[$label]=$(awk -v a="${RPS_SUM[$label]:-0}" -v b="$rps" 'BEGIN {print a + b}')
    RUNS[$label]=$((${RUNS[$label]:-0} + 1))
    awk -v l="$label" -v r="$ROUND" -v rps="$rps" -v n="$req" -v p="$P_DELTA" -v b="$B_DELTA" \
        -v other="$OTHER" -v steal="$STEAL" -v up="$upstream" -v hz="$CLK_TCK" 'BEGIN {
            printf "   %-16s round %d: %6.0f req/s  proxy %6.2f us/req  backend %6.2f us/req  ratio %.2fx  upstream conns %s  other %s%%  steal %s%%\n",
                l, r, rps, p * 1e6 / hz / n, b * 1e6 / hz / n, (b > 0 ? p / b : 0), up, other, steal
        }' >&2
}

declare -A P50 P99
run_oha() { # label port proxy-pids...
    local label=$1 port=$2 out="$WORK/oha-$1.json" p50 p99 rps ok total
    shift 2
    # A short unrecorded run first warms caches and the proxy's upstream pool.
    timeout -k 5 $((WARMUP + 30)) oha --no-tui -z "${WARMUP}s" -q "$OHA_RATE" \
        -c "$OHA_CONNS" "${OHA_HOST_ARGS[@]}" "${OHA_EXTRA[@]}" "${OHA_JSON[@]}" \
        "http://127.0.0.1:$port$REQ_PATH" >/dev/null
    window_start "$@"
    timeout -k 5 $((OHA_DURATION + 30)) oha --no-tui -z "${OHA_DURATION}s" -q "$OHA_RATE" \
        --latency-correction -c "$OHA_CONNS" "${OHA_HOST_ARGS[@]}" "${OHA_EXTRA[@]}" "${OHA_JSON[@]}" \
        "http://127.0.0.1:$port$REQ_PATH" >"$out"
    window_end "$label latency" "$@"
    read -r p50 p99 rps ok total < <("${HELPER[@]}" oha-summary "$out")
    ((ok == total)) || warn "$label: oha got $((total - ok)) of $total requests without 2xx"
    P50[$label]=$p50
    P99[$label]=$p99
    printf '   %-16s p50 %.3f ms  p99 %.3f ms  (%s req/s, %s requests)  other %s%%  steal %s%%\n' \
        "$label" "$p50" "$p99" "$rps" "$total" "$OTHER" "$STEAL" >&2
}

declare -A IDLE_KB
measure_idle() { # label port pids...
    local label=$1 port=$2
    shift 2
    local out="$WORK/idle-$label.txt" before after open hp i
    rm -f "$WORK/stop-idle"
    before=$(rss_kb "$@")
    "${HELPER[@]}" idle-conns --port "$port" --count "$IDLE_CONNS" --host "$REQ_HOST" \
        --path "$REQ_PATH" --hold 120 --stop-file "$WORK/stop-idle" >"$out" 2>&1 &
    hp=$!
    PIDS+=("$hp")
    for ((i = 0; i < 900; i++)); do
        grep -qs '^READY' "$out" && break
        kill -0 "$hp" 2>/dev/null || { cat "$out" >&2; echo "idle-conns failed" >&2; exit 1; }
        sleep 0.1
    done
    grep -q '^READY' "$out" || { echo "idle-conns did not get ready" >&2; exit 1; }
    grep -q 'non200=0' "$out" || warn "$label: $(head -n1 "$out")"
    sleep 1
    after=$(rss_kb "$@")
    open=$(ss -Htn state established "( sport = :$port )" | wc -l)
    touch "$WORK/stop-idle"
    for ((i = 0; i < 100; i++)); do
        kill -0 "$hp" 2>/dev/null || break
        sleep 0.1
    done
    wait "$hp" || true
    ((open >= IDLE_CONNS)) || warn "$label: only $open of $IDLE_CONNS idle connections were open at measurement"
    grep -q 'closed_by_server=0' "$out" || warn "$label: $(grep DONE "$out" || echo 'helper did not finish')"
    IDLE_KB[$label]=$(awk -v a="$after" -v b="$before" -v n="$IDLE_CONNS" 'BEGIN {printf "%.2f", (a - b) / n}')
    printf '   %-16s RSS %d KB -> %d KB with %d open: %s KB per connection\n' \
        "$label" "$before" "$after" "$open" "${IDLE_KB[$label]}" >&2
}

# --- run ------------------------------------------------------------------------------

# Other work on the machine skews every figure: give it a little time to finish.
busy_pct() { # CPU busy over one second, in % of a core
    local b0 a0 b1 a1 _st
    read -r b0 _st a0 < <(sys_ticks)
    sleep 1
    read -r b1 _st a1 < <(sys_ticks)
    echo $(((b1 - b0) * 100 * NCPU / (a1 - a0 + 1)))
}
for ((i = 0; ; i++)); do
    busy=$(busy_pct)
    ((busy > 20)) || break
    if ((i >= QUIET_WAIT)); then
        warn "the machine was busy before the run (${busy}% of a core in use by other processes)"
        break
    fi
    ((i > 0)) || log "waiting up to ${QUIET_WAIT}s for other work on the machine (${busy}% of a core busy)"
done

log "work dir $WORK; ports backend $P_BACKEND nginx $P_NGINX portcullis $P_GW $MANY $P_GWMANY"

start_nginx backend "$BENCH/nginx-backend.conf.in" "$P_BACKEND"
BACKEND_WORKERS=("${NGINX_WORKERS[@]}")
start_nginx nginx "$BENCH/nginx-proxy.conf.in" "$P_NGINX"
PROXY_NGINX_WORKERS=("${NGINX_WORKERS[@]}")

# Each gateway watches the folder of its config file, so each gets a folder of its own.
mkdir -p "$WORK/config-one" "$WORK/config-many"
cat >"$WORK/config-one/routes.yaml" <<EOF
apiVersion: portcullis.dev/v1alpha1
kind: Route
metadata: { name: all, namespace: bench }
spec:
  rules:
    - matches:
        - path: { type: PathPrefix, value: / }
      backends:
        - address: "127.0.0.1:$P_BACKEND"
EOF
read -r REQ_HOST REQ_PATH < <("${HELPER[@]}" gen-routes --count "$ROUTES" \
    --backend "127.0.0.1:$P_BACKEND" --out "$WORK/config-many/routes.yaml")
[[ -n ${REQ_PATH:-} ]] || { echo "generating routes failed" >&2; exit 1; }
if [[ ${OHA_HOST_FLAG[0]} == --host ]]; then
    OHA_HOST_ARGS=(--host "$REQ_HOST")
else
    OHA_HOST_ARGS=(-H "Host: $REQ_HOST")
fi
log "every request: Host $REQ_HOST, path $REQ_PATH (route $REQ_HOST in the ${ROUTES}-route file)"

start_gateway portcullis "$WORK/config-one/routes.yaml" "$P_GW" "$P_GW_ADMIN"
GW1_PID=$GW_PID
start_gateway "$MANY" "$WORK/config-many/routes.yaml" "$P_GWMANY" "$P_GWMANY_ADMIN"
GWMANY_PID=$GW_PID

check_ok backend "$P_BACKEND"
check_ok nginx "$P_NGINX"
check_ok portcullis "$P_GW"
check_ok "$MANY" "$P_GWMANY"

log "throughput and CPU: wrk -t1 -c$WRK_CONNS -d${WRK_DURATION}s, $ROUNDS round(s)"
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    run_wrk nginx "$P_NGINX" "${PROXY_NGINX_WORKERS[@]}"
    run_wrk portcullis "$P_GW" "$GW1_PID"
    run_wrk "$MANY" "$P_GWMANY" "$GWMANY_PID"
done

log "latency: oha -q $OHA_RATE -c $OHA_CONNS -z ${OHA_DURATION}s --latency-correction"
run_oha direct "$P_BACKEND"
run_oha nginx "$P_NGINX" "${PROXY_NGINX_WORKERS[@]}"
run_oha portcullis "$P_GW" "$GW1_PID"
run_oha "$MANY" "$P_GWMANY" "$GWMANY_PID"

log "memory: $IDLE_CONNS idle keep-alive connections (nginx: worker RSS; portcullis: process RSS)"
measure_idle nginx "$P_NGINX" "${PROXY_NGINX_WORKERS[@]}"
measure_idle portcullis "$P_GW" "$GW1_PID"

stop_pid "$GWMANY_PID"
stop_pid "$GW1_PID"

# --- report ---------------------------------------------------------------------------

labels=(nginx portcullis "$MANY")
fmt() { awk "BEGIN {printf \"$1\", ($2)}"; }
cpu_us() { fmt "%.2f" "${TICKS[$1]} * 1e6 / $CLK_TCK / ${REQS[$1]}"; }
row() { printf '%-24s %-14s %-14s %-14s\n' "$@"; }

echo
echo "portcullis vs nginx, one worker each, origin: nginx (1 worker) on 127.0.0.1:$P_BACKEND"
echo "$OHA_VERSION; wrk -t1 -c$WRK_CONNS -d${WRK_DURATION}s x $ROUNDS; oha -q $OHA_RATE -c $OHA_CONNS -z ${OHA_DURATION}s --latency-correction"
echo "direct to origin: p50 $(fmt %.3f "${P50[direct]}") ms, p99 $(fmt %.3f "${P99[direct]}") ms"
echo
row "" nginx portcullis "portcullis(${ROUTES} routes)"
r=() a50=() a99=() cpu=() bcpu=() ratio=()
for l in "${labels[@]}"; do
    r+=("$(fmt %.0f "${RPS_SUM[$l]} / ${RUNS[$l]}")")
    a50+=("$(fmt %.3f "${P50[$l]} - ${P50[direct]}")")
    a99+=("$(fmt %.3f "${P99[$l]} - ${P99[direct]}")")
    cpu+=("$(cpu_us "$l")")
    bcpu+=("$(fmt %.2f "${BTICKS[$l]} * 1e6 / $CLK_TCK / ${REQS[$l]}")")
    ratio+=("$(fmt %.2fx "${BTICKS[$l]} > 0 ? ${TICKS[$l]} / ${BTICKS[$l]} : 0")")
done
row "requests/s" "${r[@]}"
row "added p50 (ms)" "${a50[@]}"
row "added p99 (ms)" "${a99[@]}"
row "CPU/req (us)" "${cpu[@]}"
row "backend CPU/req (us)" "${bcpu[@]}"
row "CPU/req vs backend" "${ratio[@]}"
row "idle conn memory (KB)" "${IDLE_KB[nginx]}" "${IDLE_KB[portcullis]}" "-"
row "CPU/req vs 1 route" "-" "-" \
    "$(fmt %+.1f%% "(${TICKS[$MANY]} / ${REQS[$MANY]}) / (${TICKS[portcullis]} / ${REQS[portcullis]}) * 100 - 100")"
echo
echo "CPU/req vs backend: the proxy's CPU time per request over the origin worker's in the same run."
echo "idle conn memory: (RSS with $IDLE_CONNS idle keep-alive connections - RSS before) / $IDLE_CONNS;"
echo "  nginx counts its worker process only, portcullis its one process."
if ((${#WARNINGS[@]})); then
    echo
    printf 'WARNING: %s\n' "${WARNINGS[@]}"
fi
