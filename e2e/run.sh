#!/usr/bin/env bash
# End-to-end tests against a real API server: builds etcd, kube-apiserver and helm once
# (cached), checks the Helm chart, starts the control plane in a private network
# namespace, installs the rendered chart there, runs tests/e2e under the chart's
# ServiceAccount and RBAC, and cleans up. Needs root for `ip netns`.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "e2e: $*" >&2; exit 1; }
[[ $EUID -eq 0 ]] || die "needs root (it creates a network namespace); run: sudo bash e2e/run.sh"
command -v kubectl >/dev/null || die "kubectl is not installed"
command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl >/dev/null; } \
    || die "openssl is missing and could not be installed"
command -v ip >/dev/null || { apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null; } \
    || die "ip (iproute2) is missing and could not be installed"
command -v go >/dev/null || die "Go is not installed (it builds kube-apiserver, etcd and helm)"

NS="pc-e2e-$$"
DIR="$(mktemp -d /tmp/portcullis-e2e.XXXXXX)"
# 10.77.0.1 is the API server; the others are backends. They live on the namespace's
# own loopback device, so no packet leaves it.
ADDRS=(10.77.0.1 10.77.0.2 10.77.0.3 10.77.0.4 10.77.0.5)

cleanup() {
    bash e2e/controlplane.sh stop "$DIR" >/dev/null 2>&1 || true
    bash e2e/netns.sh down "$NS" >/dev/null 2>&1 || true
    rm -rf "$DIR"
}
trap cleanup EXIT

bash e2e/controlplane.sh build || die "could not build the control plane"
bash e2e/helm.sh build || die "could not build helm"
bash e2e/helm.sh check || die "the chart does not lint or render"
HELM="$(bash e2e/helm.sh bin)"
cargo test --locked --test e2e --no-run

bash e2e/netns.sh up "$NS" "${ADDRS[@]/%//32}"
in_ns() { ip netns exec "$NS" "$@"; }
E2E_APISERVER_ADDR="${ADDRS[0]}" in_ns bash e2e/controlplane.sh start "$DIR" \
    || die "the control plane did not start"

KUBECTL=(kubectl --kubeconfig "$DIR/admin.kubeconfig")
# The release the tests run under; the gateway may hold Leases only in its namespace.
RELEASE=portcullis RELEASE_NS=portcullis
# The ServiceMonitor is left out: its CRD comes with the Prometheus Operator, which this
# control plane does not have.
render() {
    "$HELM" template "$RELEASE" charts/portcullis -n "$RELEASE_NS" \
        --set serviceMonitor.enabled=false "$@"
}
# Every namespace a rendering puts objects in, so the API server can take them.
namespaces_of() { awk '$1 == "namespace:" && /^  namespace:/ { print $2 }' "$1" | sort -u; }
ensure_namespaces() {
    local ns
    for ns in $(namespaces_of "$1"); do
        in_ns "${KUBECTL[@]}" get namespace "$ns" >/dev/null 2>&1 ||
            in_ns "${KUBECTL[@]}" create namespace "$ns" >/dev/null
    done
}

# Each value set must be acceptable to a real API server; only the defaults are installed.
for values in charts/portcullis/ci/*-values.yaml; do
    render -f "$values" >"$DIR/chart.yaml"
    ensure_namespaces "$DIR/chart.yaml"
    in_ns "${KUBECTL[@]}" apply --server-side --dry-run=server -f "$DIR/chart.yaml" >/dev/null \
        || die "the API server refuses the chart rendered with $values"
done
render --include-crds >"$DIR/chart.yaml"
ensure_namespaces "$DIR/chart.yaml"
in_ns "${KUBECTL[@]}" apply --server-side --dry-run=server -f "$DIR/chart.yaml" >/dev/null \
    || die "the API server refuses the chart rendered with its defaults"
in_ns "${KUBECTL[@]}" apply --server-side -f "$DIR/chart.yaml" >/dev/null
# The Deployment never runs (no kubelet here); the tests start the binary themselves,
# with the token of the chart's ServiceAccount.
sa="$(in_ns "${KUBECTL[@]}" -n "$RELEASE_NS" get serviceaccount \
    -l "app.kubernetes.io/instance=$RELEASE" -o jsonpath='{.items[0].metadata.name}')"
[[ -n "$sa" ]] || die "the chart created no ServiceAccount"
in_ns bash e2e/controlplane.sh sa-kubeconfig "$DIR" "$RELEASE_NS" "$sa" "$DIR/gateway.kubeconfig" \
    >/dev/null

backends="$(IFS=,; echo "${ADDRS[*]:1}")"
in_ns env E2E_DIR="$DIR" E2E_GATEWAY_KUBECONFIG="$DIR/gateway.kubeconfig" E2E_BACKENDS="$backends" \
    E2E_LEASE_NAMESPACE="$RELEASE_NS" \
    cargo test --locked --offline --test e2e -- --test-threads=1 "$@"
