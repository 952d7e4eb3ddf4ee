#!/usr/bin/env bash
# Self-check of the harness: control plane inside a private network namespace,
# a Service + EndpointSlice with a non-loopback backend address, and a
# least-privilege ServiceAccount kubeconfig that can list/watch services and
# endpointslices but not secrets. Needs root (ip netns) and built binaries.
#
#   smoke.sh [STATE_DIR]     (default: a fresh temp dir)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NS="${E2E_NETNS:-pc-e2e-smoke}"
API_ADDR=10.77.0.1
BACKEND_ADDR=10.77.0.2
DIR="${1:-$(mktemp -d /tmp/pc-e2e-smoke.XXXXXX)}"

cleanup() {
    bash "$HERE/controlplane.sh" stop "$DIR" || true
    bash "$HERE/netns.sh" down "$NS" || true
}
trap cleanup EXIT

in_ns() { ip netns exec "$NS" "$@"; }
admin() { in_ns kubectl --kubeconfig "$DIR/admin.kubeconfig" --request-timeout=20s "$@"; }
gw() { in_ns kubectl --kubeconfig "$DIR/gateway.kubeconfig" --request-timeout=20s "$@"; }

bash "$HERE/netns.sh" up "$NS" "$API_ADDR/32" "$BACKEND_ADDR/32"
E2E_APISERVER_ADDR="$API_ADDR" in_ns bash "$HERE/controlplane.sh" start "$DIR"

admin get namespace default
admin create namespace portcullis
admin -n portcullis create serviceaccount gateway
admin apply -f - <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: ["$BACKEND_ADDR"]
  conditions: {ready: true}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: portcullis-gateway}
rules:
- {apiGroups: [""], resources: [services], verbs: [list, watch]}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: portcullis-gateway}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: portcullis-gateway}
subjects: [{kind: ServiceAccount, name: gateway, namespace: portcullis}]
EOF

in_ns bash "$HERE/controlplane.sh" sa-kubeconfig "$DIR" portcullis gateway "$DIR/gateway.kubeconfig"

gw auth whoami
gw get endpointslices -A
# list, not get: the role grants only list/watch.
got="$(gw -n shop get endpointslices -l kubernetes.io/service-name=web -o jsonpath='{.items[0].endpoints[0].addresses[0]}')"
[[ "$got" == "$BACKEND_ADDR" ]] || { echo "smoke: endpointslice address is '$got'" >&2; exit 1; }
gw get services -A >/dev/null
if err="$(gw get secrets -A 2>&1)"; then
    echo "smoke: service account can list secrets, expected forbidden" >&2
    exit 1
fi
[[ "$err" == *Forbidden* ]] || { echo "smoke: unexpected error: $err" >&2; exit 1; }
echo "secrets: $err"
echo "smoke: ok"
