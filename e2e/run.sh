#!/usr/bin/env bash
# End-to-end tests against a real API server: builds etcd and kube-apiserver once
# (cached), starts them in a private network namespace, runs tests/e2e there under the
# gateway's least-privilege ServiceAccount, and cleans up. Needs root for `ip netns`.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "e2e: $*" >&2; exit 1; }
[[ $EUID -eq 0 ]] || die "needs root (it creates a network namespace); run: sudo bash e2e/run.sh"
command -v kubectl >/dev/null || die "kubectl is not installed"
command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl >/dev/null; } \
    || die "openssl is missing and could not be installed"
command -v ip >/dev/null || { apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null; } \
    || die "ip (iproute2) is missing and could not be installed"
command -v go >/dev/null || die "Go is not installed (it builds kube-apiserver and etcd)"

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
cargo test --locked --test e2e --no-run

bash e2e/netns.sh up "$NS" "${ADDRS[@]/%//32}"
in_ns() { ip netns exec "$NS" "$@"; }
E2E_APISERVER_ADDR="${ADDRS[0]}" in_ns bash e2e/controlplane.sh start "$DIR" \
    || die "the control plane did not start"

KUBECTL=(kubectl --kubeconfig "$DIR/admin.kubeconfig")
in_ns "${KUBECTL[@]}" apply -f crds/ >/dev/null
in_ns "${KUBECTL[@]}" create namespace portcullis >/dev/null
in_ns "${KUBECTL[@]}" -n portcullis create serviceaccount gateway >/dev/null
{
    printf 'apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: portcullis}\nrules:\n'
    cat charts/portcullis/files/clusterrole-rules.yaml
    printf -- '---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: portcullis}\n'
    printf 'roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: portcullis}\n'
    printf 'subjects: [{kind: ServiceAccount, name: gateway, namespace: portcullis}]\n'
} | in_ns "${KUBECTL[@]}" apply -f - >/dev/null
in_ns bash e2e/controlplane.sh sa-kubeconfig "$DIR" portcullis gateway "$DIR/gateway.kubeconfig" >/dev/null

backends="$(IFS=,; echo "${ADDRS[*]:1}")"
in_ns env E2E_DIR="$DIR" E2E_GATEWAY_KUBECONFIG="$DIR/gateway.kubeconfig" E2E_BACKENDS="$backends" \
    cargo test --locked --offline --test e2e -- --test-threads=1 "$@"
