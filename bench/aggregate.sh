#!/usr/bin/env bash
# What an aggregate saves a client: one request to a BFF endpoint that calls three
# backends at once, against the same three calls made one after another by the client,
# to the same three `portcullis echo` backends on the same machine in one run. Each
# backend waits DELAY_MS before answering (0 shows the gateway's own cost: one hop and
# a JSON merge against three round trips).
# Run from the repository root: bash bench/aggregate.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
export PATH="$HOME/.cargo/bin:$PATH"

ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-300}
DELAYS=${DELAYS:-"0 20"}

WORK=$(mktemp -d /tmp/portcullis-aggregate-bench.XXXXXX)
PIDS=()
cleanup() {
    ((${#PIDS[@]})) && kill "${PIDS[@]}" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/portcullis

read -r P_USERS P_ORDERS P_NOTES P_GW P_ADMIN < <(python3 bench/helper.py free-ports 5 20000 30000)
for pair in "users:$P_USERS" "orders:$P_ORDERS" "notifications:$P_NOTES"; do
    "$BIN" echo --name "${pair%%:*}" --listen "127.0.0.1:${pair##*:}" >"$WORK/${pair%%:*}.log" 2>&1 &
    PIDS+=($!)
done

cat >"$WORK/bff.yaml" <<EOF
apiVersion: portcullis.dev/v1alpha1
kind: BFF
metadata: {name: web}
spec:
  client: web
  hosts: [web.test]
  endpoints:
  - path: /home/{id}
    aggregate:
      parts:
      - {name: user, address: '127.0.0.1:$P_USERS', path: '/users/{id}?delayMs={query.delayMs}'}
      - {name: orders, address: '127.0.0.1:$P_ORDERS', path: '/orders?owner={id}&delayMs={query.delayMs}'}
      - {name: notifications, address: '127.0.0.1:$P_NOTES', path: '/notifications/{id}?delayMs={query.delayMs}'}
EOF
"$BIN" serve --config "$WORK/bff.yaml" --no-tls --listen "127.0.0.1:$P_GW" \
    --admin "127.0.0.1:$P_ADMIN" --access-log false >"$WORK/gateway.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
    curl -fs -o /dev/null "http://127.0.0.1:$P_ADMIN/readyz" && break
    sleep 0.1
done

# One keep-alive connection per server, as a client would hold; prints the mean, p50 and
# p99 in ms of REQUESTS screen loads, each one aggregate or three sequential calls.
cat >"$WORK/load.py" <<'EOF'
import http.client, json, sys, time
mode, delay, n, gw, users, orders, notes = sys.argv[1], sys.argv[2], int(sys.argv[3]), *sys.argv[4:]
conns = {}
def get(port, path, host="127.0.0.1"):
    c = conns.get(port) or conns.setdefault(port, http.client.HTTPConnection("127.0.0.1", int(port)))
    c.request("GET", path, headers={"Host": host})
    r = c.getresponse()
    body = r.read()
    if r.status != 200:
        sys.exit(f"{path} answered {r.status}: {body[:200]!r}")
    return json.loads(body)
def screen(i):
    if mode == "aggregate":
        b = get(gw, f"/home/{i}?delayMs={delay}", "web.test")
        assert set(b) == {"user", "orders", "notifications"}, b
    else:
        get(users, f"/users/{i}?delayMs={delay}")
        get(orders, f"/orders?owner={i}&delayMs={delay}")
        get(notes, f"/notifications/{i}?delayMs={delay}")
for i in range(20):
    screen(i)
times = []
for i in range(n):
    t = time.perf_counter()
    screen(i)
    times.append((time.perf_counter() - t) * 1000)
times.sort()
print(f"{sum(times) / n:.2f} {times[n // 2]:.2f} {times[min(n - 1, int(n * 0.99))]:.2f}")
EOF

load() { python3 "$WORK/load.py" "$1" "$2" "$REQUESTS" "$P_GW" "$P_USERS" "$P_ORDERS" "$P_NOTES"; }

printf '\n%-10s %-30s %10s %10s %10s\n' "delay" "one screen (mean of $ROUNDS rounds)" "mean ms" "p50 ms" "p99 ms"
for delay in $DELAYS; do
    declare -A sum=()
    for ((round = 1; round <= ROUNDS; round++)); do
        # Alternating, so drift in the machine affects both alike.
        for mode in aggregate sequential; do
            read -r mean p50 p99 < <(load "$mode" "$delay")
            echo "delay ${delay} ms round $round $mode: mean $mean p50 $p50 p99 $p99" >&2
            sum[$mode]=$(awk -v s="${sum[$mode]:-0 0 0}" -v a="$mean" -v b="$p50" -v c="$p99" \
                'BEGIN{split(s, x, " "); print x[1]+a, x[2]+b, x[3]+c}')
        done
    done
    for mode in aggregate sequential; do
        label="1 aggregate via gateway"
        [[ $mode == sequential ]] && label="3 sequential direct calls"
        awk -v s="${sum[$mode]}" -v n="$ROUNDS" -v d="$delay ms" -v l="$label" \
            'BEGIN{split(s, x, " "); printf "%-10s %-30s %10.2f %10.2f %10.2f\n", d, l, x[1]/n, x[2]/n, x[3]/n}'
    done
    unset sum
done
