#!/usr/bin/env bash
# Helm for the chart's checks, built from its Go module (pinned in tools/helm/go.mod)
# into the same cache as the control plane.
#
#   helm.sh build      build helm into the cache; skipped when it is there
#   helm.sh bin        print the path of the binary
#   helm.sh check      lint and render the chart with every value set in its ci/ folder
#
# Env: PORTCULLIS_E2E_CACHE (default ~/.cache/portcullis-e2e).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS_DIR="$SCRIPT_DIR/tools/helm"
CHART="$SCRIPT_DIR/../charts/portcullis"

die() { echo "helm.sh: $*" >&2; exit 1; }
log() { echo "helm.sh: $*" >&2; }

HELM_VERSION="$(awk '$1 == "helm.sh/helm/v4" { print $2; exit }' "$TOOLS_DIR/go.mod")"
[[ -n "$HELM_VERSION" ]] || die "cannot read the pinned helm version from $TOOLS_DIR/go.mod"
CACHE_DIR="${PORTCULLIS_E2E_CACHE:-$HOME/.cache/portcullis-e2e}"
HELM_BIN="$CACHE_DIR/helm-$HELM_VERSION/bin/helm"

cmd_build() {
    if [[ -x "$HELM_BIN" ]]; then
        log "helm already built: $HELM_BIN"
        return 0
    fi
    command -v go >/dev/null || die "go is not installed (it builds helm)"
    mkdir -p "$(dirname "$HELM_BIN")"
    # Same caches and rules as the control plane build (controlplane.sh).
    export GOMODCACHE="${GOMODCACHE:-$CACHE_DIR/go/mod}"
    export GOCACHE="${GOCACHE:-$CACHE_DIR/go/build}"
    export GOFLAGS="-mod=readonly" CGO_ENABLED=0 GOWORK=off
    log "building helm $HELM_VERSION (first time takes a few minutes)"
    local start=$SECONDS tmp
    tmp="$(dirname "$HELM_BIN")/.helm.tmp"
    (cd "$TOOLS_DIR" && go build -trimpath \
        -ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
        -o "$tmp" helm.sh/helm/v4/cmd/helm)
    mv -f "$tmp" "$HELM_BIN"
    log "built helm in $((SECONDS - start))s: $HELM_BIN"
}

require_helm() {
    [[ -x "$HELM_BIN" ]] || die "missing $HELM_BIN; run: bash $SCRIPT_DIR/helm.sh build"
}

# ---------------------------------------------------------------- check

# Renders must fail with this text in the error, so bad values never install quietly.
expect_refused() { # TEXT HELM_ARGS...
    local want="$1" out
    shift
    if out="$("$HELM_BIN" template pc "$CHART" "$@" 2>&1)"; then
        die "rendered although it should not ($*)"
    fi
    [[ "$out" == *"$want"* ]] || die "refused ($*), but without \"$want\" in: $out"
}

cmd_check() {
    require_helm
    local values set out
    "$HELM_BIN" lint --strict "$CHART" >/dev/null || die "helm lint failed on the defaults"
    "$HELM_BIN" template pc "$CHART" >/dev/null || die "the defaults do not render"
    for values in "$CHART"/ci/*-values.yaml; do
        set="$(basename "$values")"
        out="$("$HELM_BIN" lint --strict "$CHART" -f "$values" 2>&1)" \
            || die "helm lint failed with $set: $out"
        "$HELM_BIN" template pc "$CHART" -n portcullis -f "$values" >/dev/null \
            || die "$set does not render"
        log "ok: $set"
    done
    expect_refused "additional properties 'replica' not allowed" --set replica=3
    expect_refused "/service/type" --set service.type=Ingress
    expect_refused "/watchNamespaces/0" --set 'watchNamespaces[0]=Not_A_Name'
    expect_refused "/drainSeconds" --set drainSeconds=0
    expect_refused "needs resources.requests.cpu" --set autoscaling.enabled=true \
        --set resources.requests.cpu=null
    expect_refused "minReplicas (5) is above" --set autoscaling.enabled=true \
        --set autoscaling.minReplicas=5 --set autoscaling.maxReplicas=3
    log "ok: bad values are refused"
}

case "${1:-}" in
build) cmd_build ;;
bin) echo "$HELM_BIN" ;;
check) cmd_check ;;
*) sed -n '5,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
