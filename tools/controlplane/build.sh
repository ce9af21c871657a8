#!/usr/bin/env bash
# Build the test control plane (kine, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
# helm) and
# the S3-compatible test server (gofakes3)
# from Go modules into a cache folder keyed by the pinned versions. Rebuilds only what is missing.
# Prints the bin folder on its last line.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.35.4}"
KINE_VERSION="${KINE_VERSION:-v0.17.5}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
GOFAKES3_VERSION="${GOFAKES3_VERSION:-v1.2.0}"

CACHE="${OLIVEKUBE_CACHE:-$HOME/.cache/olivekube}"
BIN="$CACHE/controlplane/k8s-$K8S_VERSION-kine-$KINE_VERSION-helm-$HELM_VERSION-s3-$GOFAKES3_VERSION/bin"
export GOMODCACHE="${GOMODCACHE:-$CACHE/gomod}"
export GOCACHE="${GOCACHE:-$CACHE/gobuild}"
export CGO_ENABLED=0
export GOFLAGS=-mod=mod
mkdir -p "$BIN"

log() { echo "[controlplane] $*" >&2; }

if [[ ! -x "$BIN/kine" ]]; then
  log "building kine $KINE_VERSION"
  GOBIN="$BIN" go install "github.com/k3s-io/kine@$KINE_VERSION"
fi

if [[ ! -x "$BIN/gofakes3" ]]; then
  log "building gofakes3 $GOFAKES3_VERSION (S3-compatible server for the tests)"
  GOBIN="$BIN" go install "github.com/johannesboyne/gofakes3/cmd/gofakes3@$GOFAKES3_VERSION"
fi

if [[ ! -x "$BIN/helm" ]]; then
  log "building helm $HELM_VERSION"
  minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
  GOBIN="$BIN" go install -ldflags "-s -w \
    -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi

need_k8s=0
for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  [[ -x "$BIN/$b" ]] || need_k8s=1
done
if [[ "$need_k8s" == 1 ]]; then
  log "building kubernetes $K8S_VERSION (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl)"
  work="$CACHE/controlplane/wrapper-$K8S_VERSION"
  mkdir -p "$work"
  staging_minor="v0.${K8S_VERSION#v1.}"
  gomod="$(cd "$work" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  {
    echo "module olivekube.io/controlplane"
    echo
    echo "go 1.25.0"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    sed -n '/^replace (/,/^)/p' "$gomod" | grep -oE 'k8s.io/[a-z0-9-]+ =>' | awk -v v="$staging_minor" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } > "$work/go.mod"
  cat > "$work/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  (cd "$work" && go mod tidy >&2)
  major=1
  minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
  ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    if [[ ! -x "$BIN/$b" ]]; then
      log "  go build $b"
      (cd "$work" && go build -trimpath -ldflags "$ld" -o "$BIN/$b.tmp" "k8s.io/kubernetes/cmd/$b" && mv "$BIN/$b.tmp" "$BIN/$b")
    fi
  done
fi

echo "$BIN"
