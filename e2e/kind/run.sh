#!/usr/bin/env bash
# Portcullis in a real Kubernetes cluster on this machine: builds the image, creates a
# kind cluster (or reuses it), installs the Helm chart, deploys examples/saas and sends
# requests through the gateway. Needs a running Docker, and kind, kubectl, helm and curl.
#
#   bash e2e/kind/run.sh            set it all up and check the traffic
#   bash e2e/kind/run.sh delete     delete the cluster
#
# Env: KIND_CLUSTER (default portcullis); PORTCULLIS_HTTP_PORT, the port on 127.0.0.1
# that reaches the gateway (default 8080; read when the cluster is created);
# KIND_NODE_IMAGE, a kindest/node image for another Kubernetes version (1.30 or newer);
# HELM, a helm binary (default: helm on PATH, else the one `bash e2e/helm.sh build` made).
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER="${KIND_CLUSTER:-portcullis}"
CONTEXT="kind-$CLUSTER"
PORT="${PORTCULLIS_HTTP_PORT:-8080}"
# The gateway's Service listens on this node port; the cluster maps it to PORT.
NODE_PORT=30080
RELEASE=portcullis
NS=portcullis

die() { echo "kind/run.sh: $*" >&2; exit 1; }
step() { echo "==> $*" >&2; }
need() { # COMMAND HINT
    command -v "$1" >/dev/null || die "$1 is not installed; $2"
}

need kind "install it: go install sigs.k8s.io/kind@latest, or see the kind documentation"
if [[ "${1:-}" == delete ]]; then
    kind delete cluster --name "$CLUSTER"
    exit 0
fi
[[ $# -eq 0 ]] || die "unknown argument $1; usage: bash e2e/kind/run.sh [delete]"

need docker "install Docker Engine or Docker Desktop; kind runs its nodes as containers"
need kubectl "install kubectl, any version from the last year"
need curl "install it with your package manager"
docker info >/dev/null 2>&1 ||
    die "docker is installed but its daemon does not answer: is it running, and may $(id -un) use it?"
if [[ -z "${HELM:-}" ]]; then
    if command -v helm >/dev/null; then
        HELM=helm
    elif [[ -x "$(bash e2e/helm.sh bin)" ]]; then
        HELM="$(bash e2e/helm.sh bin)"
    else
        die "helm is not installed; install Helm 3 or 4, or build it with: bash e2e/helm.sh build"
    fi
fi
K=(kubectl --context "$CONTEXT")

step "building the image portcullis:dev"
docker build -t portcullis:dev .
# A tag per build, so that installing a rebuilt image changes the Deployment and rolls it.
id="$(docker image inspect -f '{{.Id}}' portcullis:dev)"
TAG="dev-${id#sha256:}"
TAG="${TAG:0:16}"
docker tag portcullis:dev "portcullis:$TAG"

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    step "reusing the kind cluster $CLUSTER"
else
    step "creating the kind cluster $CLUSTER (127.0.0.1:$PORT reaches the gateway)"
    node_image=()
    [[ -n "${KIND_NODE_IMAGE:-}" ]] && node_image=(--image "$KIND_NODE_IMAGE")
    kind create cluster --name "$CLUSTER" "${node_image[@]}" --wait 120s --config - <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
    extraPortMappings:
      - containerPort: $NODE_PORT
        hostPort: $PORT
        listenAddress: 127.0.0.1
EOF
fi
# The port the cluster really maps, which differs from PORT when it was created with another.
mapped="$(docker port "$CLUSTER-control-plane" "$NODE_PORT/tcp" 2>/dev/null | head -n 1)"
[[ -n "$mapped" ]] ||
    die "the cluster $CLUSTER maps no host port to $NODE_PORT; delete it: bash e2e/kind/run.sh delete"
PORT="${mapped##*:}"

step "loading the image into the cluster"
kind load docker-image --name "$CLUSTER" portcullis:dev "portcullis:$TAG"

step "installing the chart as $RELEASE in namespace $NS"
# Helm installs CRDs only on the first install; applying them keeps them current.
"${K[@]}" apply --server-side -f charts/portcullis/crds/ >/dev/null
"$HELM" upgrade --install "$RELEASE" charts/portcullis --kube-context "$CONTEXT" \
    --namespace "$NS" --create-namespace \
    --set image.repository=portcullis --set image.tag="$TAG" --set image.pullPolicy=Never \
    --set service.type=NodePort --set service.nodePort="$NODE_PORT" \
    --set logFormat=text \
    --wait --timeout 3m

step "deploying examples/saas"
"${K[@]}" apply -f examples/saas/
for d in users orders notifications; do
    "${K[@]}" -n acme rollout status "deployment/$d" --timeout 3m
done
"${K[@]}" -n acme wait --for=condition=Programmed route/web route/mobile --timeout 60s

fail_with_logs() {
    "${K[@]}" -n acme get routes >&2 || true
    "${K[@]}" -n "$NS" logs "deployment/$RELEASE" --tail 30 >&2 || true
    die "$1"
}

# Answers through the node port; the first requests may race the Service's set-up.
expect() { # HOST PATH WANT (an x-echo-name or a status code)
    local host="$1" path="$2" want="$3" got="" i
    local url="http://127.0.0.1:$PORT$path"
    for ((i = 0; i < 30; i++)); do
        if [[ "$want" =~ ^[0-9]+$ ]]; then
            got="$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $host" "$url")" || true
        else
            got="$(curl -s -D - -o /dev/null -H "Host: $host" "$url" |
                tr -d '\r' | awk -F': ' 'tolower($1) == "x-echo-name" { print $2 }')" || true
        fi
        [[ "$got" == "$want" ]] && { echo "ok: $host$path -> $want" >&2; return 0; }
        sleep 1
    done
    fail_with_logs "$host$path: expected $want, got ${got:-nothing}"
}

step "sending requests through the gateway"
expect www.acme.example /api/users/42 users
expect www.acme.example /api/orders orders
expect www.acme.example /api/notifications notifications
expect mobile.acme.example /v1/users/42 users
expect mobile.acme.example /v1/orders/7 orders
expect mobile.acme.example /v0/users/42 308
expect www.acme.example /nowhere 404

cat <<EOF

Portcullis serves examples/saas in the kind cluster $CLUSTER. Try:

  curl -s -H 'Host: www.acme.example' http://127.0.0.1:$PORT/api/users/42
  curl -s -H 'Host: mobile.acme.example' http://127.0.0.1:$PORT/v1/orders/7
  kubectl --context $CONTEXT get routes -A
  kubectl --context $CONTEXT -n $NS logs deployment/$RELEASE

Clean up with:

  bash e2e/kind/run.sh delete      # or: kind delete cluster --name $CLUSTER
EOF
