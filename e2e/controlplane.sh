#!/usr/bin/env bash
# Local Kubernetes control plane (etcd + kube-apiserver as plain processes)
# for the gateway's end-to-end tests. No kubelet, scheduler or
# controller-manager: tests create EndpointSlices themselves.
#
#   controlplane.sh build                 build binaries into the cache
#   controlplane.sh bin-dir               print where the binaries live
#   controlplane.sh start DIR             start etcd + kube-apiserver, state in DIR
#   controlplane.sh stop DIR              stop what `start DIR` started
#   controlplane.sh sa-kubeconfig DIR NAMESPACE NAME OUT
#                                         kubeconfig OUT acting as ServiceAccount NAME
#   controlplane.sh stop-apiserver DIR    stop only the API server (an outage)
#   controlplane.sh start-apiserver DIR   start it again as before
#
# Env: PORTCULLIS_E2E_CACHE (default ~/.cache/portcullis-e2e),
#      E2E_APISERVER_ADDR (default 127.0.0.1), E2E_START_TIMEOUT (seconds, default 90).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS_DIR="$SCRIPT_DIR/tools"

die() { echo "controlplane: $*" >&2; exit 1; }
log() { echo "controlplane: $*" >&2; }

# Versions come from the pinned module so the cache key follows go.mod.
K8S_VERSION="$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$TOOLS_DIR/go.mod")"
ETCD_VERSION="$(awk '$1 == "go.etcd.io/etcd/server/v3" && $2 ~ /^v/ { print $2; exit }' "$TOOLS_DIR/go.mod")"
[[ -n "$K8S_VERSION" && -n "$ETCD_VERSION" ]] || die "cannot read pinned versions from $TOOLS_DIR/go.mod"

CACHE_DIR="${PORTCULLIS_E2E_CACHE:-$HOME/.cache/portcullis-e2e}"
BIN_DIR="$CACHE_DIR/k8s-$K8S_VERSION/bin"
APISERVER_BIN="$BIN_DIR/kube-apiserver"
ETCD_BIN="$BIN_DIR/etcd"

# ---------------------------------------------------------------- build

build_one() { # NAME PACKAGE EXTRA_LDFLAGS
    local name="$1" pkg="$2" extra="$3"
    if [[ -x "$BIN_DIR/$name" ]]; then
        log "$name already built: $BIN_DIR/$name"
        return 0
    fi
    log "building $name from $pkg (first time takes a while)"
    local start=$SECONDS
    # Build to a temp name so an interrupted build never leaves a half binary.
    (cd "$TOOLS_DIR" && go build -trimpath -ldflags="-s -w $extra" -o "$BIN_DIR/.$name.tmp" "$pkg")
    mv -f "$BIN_DIR/.$name.tmp" "$BIN_DIR/$name"
    log "built $name in $((SECONDS - start))s"
}

cmd_build() {
    command -v go >/dev/null || die "go is not installed"
    mkdir -p "$BIN_DIR"
    # Keep downloads and compiler cache beside the binaries (one dir to cache or
    # delete), unless the caller chose its own Go caches.
    export GOMODCACHE="${GOMODCACHE:-$CACHE_DIR/go/mod}"
    export GOCACHE="${GOCACHE:-$CACHE_DIR/go/build}"
    # go.sum is complete: refuse silent module changes; static binaries need no C toolchain;
    # a stray go.work above the clone must not change the build.
    export GOFLAGS="-mod=readonly" CGO_ENABLED=0 GOWORK=off
    local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
    # Stamp the real version; otherwise the apiserver reports v0.0.0-master.
    local kver="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
    kver+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
    kver+=" -X k8s.io/component-base/version.gitTreeState=clean"
    kver+=" -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
    kver+=" -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
    build_one kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$kver"
    build_one etcd go.etcd.io/etcd/server/v3 ""
    echo "kubernetes $K8S_VERSION, etcd $ETCD_VERSION"
    echo "binaries: $BIN_DIR"
    ls -l "$BIN_DIR"
}

# ---------------------------------------------------------------- start/stop

require_bins() {
    local b
    for b in "$APISERVER_BIN" "$ETCD_BIN"; do
        [[ -x "$b" ]] || die "missing $b; run: bash $SCRIPT_DIR/controlplane.sh build"
    done
    for b in kubectl openssl; do
        command -v "$b" >/dev/null || die "$b is not installed"
    done
}

# Listening TCP ports (v4 and v6) from /proc, so no extra tools are needed.
listening_ports() {
    local hex
    # mawk has no strtonum: print hex ports, convert in bash.
    awk 'NR > 1 && $4 == "0A" { n = split($2, a, ":"); print a[n] }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null | sort -u | while read -r hex; do
        echo $((16#$hex))
    done
}

# A free port below the kernel's ephemeral range, so outgoing connections
# cannot grab it between choosing and binding.
USED_PORTS=" "
free_port() {
    local used p i
    used=" $(listening_ports | tr '\n' ' ')"
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 12000))
        if [[ "$used" != *" $p "* && "$USED_PORTS" != *" $p "* ]]; then
            USED_PORTS+="$p "
            echo "$p"
            return 0
        fi
    done
    die "no free TCP port found"
}

gen_certs() { # DIR ADDR
    local dir="$1" addr="$2" san
    san="DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
    san+=",DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$SERVICE_IP,IP:$addr"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=portcullis-e2e-ca" \
        -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
        -keyout "$dir/apiserver.key" -out "$dir/apiserver.csr" 2>/dev/null
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n' \
        "$san" >"$dir/apiserver.ext"
    openssl x509 -req -in "$dir/apiserver.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 30 -extfile "$dir/apiserver.ext" -out "$dir/apiserver.crt" 2>/dev/null
    # Service-account token signing pair.
    openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
    openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
}

# Running and not a zombie waiting to be reaped by init.
running() { # PID
    local state
    state="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)"
    [[ -n "$state" && "$state" != Z && "$state" != X ]]
}

pid_alive() { # PIDFILE EXPECTED_COMM
    local pid
    [[ -f "$1" ]] || return 1
    pid="$(cat "$1")"
    [[ -n "$pid" ]] && running "$pid" || return 1
    # Guard against a recycled PID belonging to something else.
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$2" ]]
}

stop_one() { # PIDFILE COMM
    local pidfile="$1" comm="$2" pid i
    if pid_alive "$pidfile" "$comm"; then
        pid="$(cat "$pidfile")"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do # up to 10s for a clean shutdown
            running "$pid" || break
            sleep 0.1
        done
        if running "$pid"; then
            log "$comm ($pid) did not exit, killing"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        log "stopped $comm ($pid)"
    fi
    rm -f "$pidfile"
}

cmd_stop() {
    [[ $# -eq 1 ]] || die "usage: controlplane.sh stop DIR"
    local dir="$1"
    [[ -d "$dir" ]] || { log "$dir does not exist, nothing to stop"; return 0; }
    # API server first so it does not log etcd errors while going down.
    stop_one "$dir/kube-apiserver.pid" kube-apiserver
    stop_one "$dir/etcd.pid" etcd
}

fail_start() { # DIR MESSAGE
    local dir="$1"
    log "$2"
    local f
    for f in etcd kube-apiserver; do
        if [[ -s "$dir/$f.log" ]]; then
            echo "----- last lines of $dir/$f.log -----" >&2
            tail -n 30 "$dir/$f.log" >&2
        fi
    done
    cmd_stop "$dir" || true
    exit 1
}

# Start a daemon detached from the caller's session, logging to DIR/NAME.log.
spawn() { # DIR NAME CMD...
    local dir="$1" name="$2"
    shift 2
    # Kept so `restart-apiserver` can start the same process again.
    printf '%q ' "$@" >"$dir/$name.cmd"
    setsid "$@" </dev/null >>"$dir/$name.log" 2>&1 &
    local pid=$! i
    echo "$pid" >"$dir/$name.pid"
    # Until exec completes the child still shows as bash; pid_alive checks the name.
    for ((i = 0; i < 50; i++)); do
        if [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]] || ! running "$pid"; then break; fi
        sleep 0.05
    done
}

etcd_healthy() { # PORT
    # Plain HTTP over bash's /dev/tcp: no curl needed.
    timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/'"$1"'
        printf "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" >&3
        cat <&3' 2>/dev/null | grep -q '"health":"true"'
}

write_kubeconfig() { # OUT SERVER CA TOKEN USER
    local out="$1"
    rm -f "$out"
    (umask 077 && : >"$out")
    kubectl config --kubeconfig="$out" set-cluster e2e --server="$2" \
        --certificate-authority="$3" --embed-certs=true >/dev/null
    kubectl config --kubeconfig="$out" set-credentials "$5" --token="$4" >/dev/null
    kubectl config --kubeconfig="$out" set-context e2e --cluster=e2e --user="$5" >/dev/null
    kubectl config --kubeconfig="$out" use-context e2e >/dev/null
}

SERVICE_CIDR="10.96.0.0/16"
SERVICE_IP="10.96.0.1" # first address of SERVICE_CIDR, taken by the `kubernetes` Service

cmd_start() {
    [[ $# -eq 1 ]] || die "usage: controlplane.sh start DIR"
    require_bins
    local dir addr timeout etcd_port peer_port api_port host server i
    mkdir -p "$1"
    dir="$(cd "$1" && pwd)"
    addr="${E2E_APISERVER_ADDR:-127.0.0.1}"
    timeout="${E2E_START_TIMEOUT:-90}"
    if pid_alive "$dir/etcd.pid" etcd || pid_alive "$dir/kube-apiserver.pid" kube-apiserver; then
        die "a control plane is already running from $dir; run: controlplane.sh stop $dir"
    fi
    rm -rf "$dir/etcd-data"
    # The bind address must exist here (e.g. on lo inside a network namespace).
    if [[ "$addr" != 127.* && "$addr" != "::1" ]] && ! ip -o addr show 2>/dev/null | grep -qw "$addr"; then
        die "E2E_APISERVER_ADDR=$addr is not an address of this network namespace"
    fi

    gen_certs "$dir" "$addr"
    local token
    token="$(openssl rand -hex 24)"
    # Static token: admin user in system:masters, which bypasses RBAC.
    (umask 077 && printf '%s,admin,admin,"system:masters"\n' "$token" >"$dir/tokens.csv")

    etcd_port="$(free_port)"
    peer_port="$(free_port)"
    api_port="$(free_port)"

    spawn "$dir" etcd "$ETCD_BIN" \
        --name=e2e \
        --data-dir="$dir/etcd-data" \
        --listen-client-urls="http://127.0.0.1:$etcd_port" \
        --advertise-client-urls="http://127.0.0.1:$etcd_port" \
        --listen-peer-urls="http://127.0.0.1:$peer_port" \
        --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
        --initial-cluster="e2e=http://127.0.0.1:$peer_port" \
        --unsafe-no-fsync \
        --log-level=warn
    # Throwaway data: skipping fsync makes tests faster and spares the disk.

    for ((i = 0; i < timeout * 5; i++)); do
        pid_alive "$dir/etcd.pid" etcd || fail_start "$dir" "etcd exited during startup"
        etcd_healthy "$etcd_port" && break
        sleep 0.2
    done
    etcd_healthy "$etcd_port" || fail_start "$dir" "etcd not healthy after ${timeout}s"
    log "etcd up on 127.0.0.1:$etcd_port"

    host="$addr"
    [[ "$host" == *:* ]] && host="[$host]"
    server="https://$host:$api_port"
    local issuer="https://kubernetes.default.svc.cluster.local" extra=()
    # A loopback advertise address cannot go into the `kubernetes` Service's
    # endpoints; skip that reconciler instead of logging an error every 10s.
    [[ "$addr" == 127.* || "$addr" == "::1" ]] && extra+=(--endpoint-reconciler-type=none)
    spawn "$dir" kube-apiserver "$APISERVER_BIN" \
        --etcd-servers="http://127.0.0.1:$etcd_port" \
        --bind-address="$addr" \
        --advertise-address="$addr" \
        --secure-port="$api_port" \
        --cert-dir="$dir" \
        --tls-cert-file="$dir/apiserver.crt" \
        --tls-private-key-file="$dir/apiserver.key" \
        --client-ca-file="$dir/ca.crt" \
        --token-auth-file="$dir/tokens.csv" \
        --authorization-mode=RBAC \
        --service-account-issuer="$issuer" \
        --service-account-key-file="$dir/sa.pub" \
        --service-account-signing-key-file="$dir/sa.key" \
        --api-audiences="$issuer" \
        --service-cluster-ip-range="$SERVICE_CIDR" \
        --profiling=false \
        "${extra[@]}"

    write_kubeconfig "$dir/admin.kubeconfig" "$server" "$dir/ca.crt" "$token" admin

    local ready=""
    for ((i = 0; i < timeout * 2; i++)); do
        pid_alive "$dir/kube-apiserver.pid" kube-apiserver || fail_start "$dir" "kube-apiserver exited during startup"
        if [[ "$(kubectl --kubeconfig="$dir/admin.kubeconfig" --request-timeout=2s get --raw=/readyz 2>/dev/null)" == ok ]]; then
            ready=1
            break
        fi
        sleep 0.5
    done
    [[ -n "$ready" ]] || fail_start "$dir" "kube-apiserver not ready at $server/readyz after ${timeout}s"

    # Handy for tests that do not want to parse the kubeconfig.
    cat >"$dir/env" <<EOF
E2E_APISERVER_URL=$server
E2E_ETCD_URL=http://127.0.0.1:$etcd_port
E2E_KUBECONFIG=$dir/admin.kubeconfig
E2E_CA_FILE=$dir/ca.crt
EOF
    echo "kube-apiserver ready at $server"
    echo "kubeconfig: $dir/admin.kubeconfig"
}

# ---------------------------------------------------------------- service accounts

cmd_sa_kubeconfig() {
    [[ $# -eq 4 ]] || die "usage: controlplane.sh sa-kubeconfig DIR NAMESPACE NAME OUT"
    local dir="$1" ns="$2" name="$3" out="$4" admin server token
    admin="$dir/admin.kubeconfig"
    [[ -f "$admin" ]] || die "no $admin; run: controlplane.sh start $dir"
    local k=(kubectl --kubeconfig="$admin" --request-timeout=20s)
    "${k[@]}" get namespace "$ns" >/dev/null 2>&1 || "${k[@]}" create namespace "$ns" >/dev/null
    "${k[@]}" -n "$ns" get serviceaccount "$name" >/dev/null 2>&1 ||
        "${k[@]}" -n "$ns" create serviceaccount "$name" >/dev/null
    # TokenRequest is served by the API server itself; no controller-manager needed.
    token="$("${k[@]}" -n "$ns" create token "$name" --duration=24h)"
    [[ -n "$token" ]] || die "empty token for $ns/$name"
    server="$("${k[@]}" config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
    write_kubeconfig "$out" "$server" "$dir/ca.crt" "$token" "system:serviceaccount:$ns:$name"
    echo "kubeconfig for system:serviceaccount:$ns:$name: $out"
}

# ---------------------------------------------------------------- outages

# Stops only the API server (etcd keeps its data), for tests of a gateway that must
# keep serving while the control plane is away.
cmd_stop_apiserver() {
    [[ $# -eq 1 ]] || die "usage: controlplane.sh stop-apiserver DIR"
    stop_one "$1/kube-apiserver.pid" kube-apiserver
}

# Starts the API server again with the arguments of its first start.
cmd_start_apiserver() {
    [[ $# -eq 1 ]] || die "usage: controlplane.sh start-apiserver DIR"
    local dir i
    dir="$(cd "$1" && pwd)"
    [[ -f "$dir/kube-apiserver.cmd" ]] || die "no recorded kube-apiserver command in $dir"
    pid_alive "$dir/kube-apiserver.pid" kube-apiserver && die "kube-apiserver is already running"
    local -a args
    eval "args=($(cat "$dir/kube-apiserver.cmd"))"
    spawn "$dir" kube-apiserver "${args[@]}"
    for ((i = 0; i < ${E2E_START_TIMEOUT:-90} * 2; i++)); do
        if [[ "$(kubectl --kubeconfig="$dir/admin.kubeconfig" --request-timeout=2s get --raw=/readyz 2>/dev/null)" == ok ]]; then
            echo "kube-apiserver ready again"
            return 0
        fi
        sleep 0.5
    done
    die "kube-apiserver not ready again after ${E2E_START_TIMEOUT:-90}s"
}

# ---------------------------------------------------------------- main

usage() {
    sed -n '6,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

case "${1:-}" in
build) shift; cmd_build "$@" ;;
bin-dir) echo "$BIN_DIR" ;;
start) shift; cmd_start "$@" ;;
stop) shift; cmd_stop "$@" ;;
sa-kubeconfig) shift; cmd_sa_kubeconfig "$@" ;;
stop-apiserver) shift; cmd_stop_apiserver "$@" ;;
start-apiserver) shift; cmd_start_apiserver "$@" ;;
*) usage ;;
esac
