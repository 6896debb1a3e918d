#!/usr/bin/env bash
# Build a real Kubernetes control plane for tests/k8s from the Go module proxy (the envtest model):
# kube-apiserver, kube-controller-manager and kubectl from one pinned k8s.io/kubernetes version, etcd
# from go.etcd.io/etcd/server/v3, and helm from helm.sh/helm/v3.
#
# Binaries land in ${DREAMBOT_CACHE:-$HOME/.cache/dreambot}/k8s-<version>/bin. Idempotent: a binary
# whose stamp (bin/.<name>.version) names the pinned version is not rebuilt, so CI reuses the cache.
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces every staging module (k8s.io/api,
# client-go, ...) with a local path. The build module below requires k8s.io/kubernetes and replaces
# each of those staging modules with the published k8s.io/<name> v0.<minor>.<patch>; the list is read
# from the replace block of that version's own go.mod, so it follows the pinned version.
#
# Usage: scripts/build-k8s.sh            build what is missing, print the bin dir on stdout
#        scripts/build-k8s.sh --print-bin  only print the bin dir
set -euo pipefail

K8S_VERSION="${DREAMBOT_K8S_VERSION:-v1.37.2}"
ETCD_VERSION="${DREAMBOT_ETCD_VERSION:-v3.7.3}"
HELM_VERSION="${DREAMBOT_HELM_VERSION:-v3.22.0}"

CACHE="${DREAMBOT_CACHE:-$HOME/.cache/dreambot}"
ROOT="$CACHE/k8s-$K8S_VERSION"
BIN="$ROOT/bin"

if [ "${1:-}" = "--print-bin" ]; then
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || { echo "build-k8s: go is not installed" >&2; exit 1; }
mkdir -p "$BIN"

export GOFLAGS="-mod=mod -buildvcs=false"
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
export CGO_ENABLED=0
# Two cores: one package at a time keeps the peak memory of the big links reasonable.
export GOMAXPROCS="${GOMAXPROCS:-2}"

log() { echo "build-k8s: $*" >&2; }

built() {  # built NAME VERSION: true when bin/NAME exists and was built from VERSION
  [ -x "$BIN/$1" ] && [ "$(cat "$BIN/.$1.version" 2>/dev/null)" = "$2" ]
}

stamp() { echo "$2" >"$BIN/.$1.version"; }

# Kubernetes: kube-apiserver, kube-controller-manager, kubectl -------------------------------------
build_kubernetes() {
  local need=()
  for b in kube-apiserver kube-controller-manager kubectl; do
    built "$b" "$K8S_VERSION" || need+=("$b")
  done
  [ ${#need[@]} -eq 0 ] && { log "kubernetes $K8S_VERSION: already built"; return; }

  local mod="$ROOT/src/kubernetes"
  mkdir -p "$mod"
  local minor="${K8S_VERSION#v1.}"          # 37.2
  local staging_version="v0.$minor"          # v0.37.2
  local gomod
  gomod="$(cd "$mod" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" \
    | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')"
  [ -f "$gomod" ] || { log "could not download k8s.io/kubernetes@$K8S_VERSION"; exit 1; }
  local goline
  goline="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod")"

  {
    echo "module dreambot.local/k8s-build"
    echo
    echo "go $goline"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    awk '/^replace \(/{on=1; next} on && /^\)/{on=0} on && /=> \.\/staging\//{print $1}' "$gomod" \
      | while read -r m; do echo "	$m => $m $staging_version"; done
    echo ")"
  } >"$mod/go.mod"
  grep -q "k8s.io/client-go => " "$mod/go.mod" || { log "no staging replace block found in $gomod"; exit 1; }
  [ -f "$mod/go.sum" ] || : >"$mod/go.sum"

  local date pkg
  date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  local minor_only="${minor%%.*}"
  local ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor_only"
    ld="$ld -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  for b in "${need[@]}"; do
    log "building $b $K8S_VERSION (minutes on 2 cores)"
    local t0=$SECONDS
    (cd "$mod" && go build -trimpath -ldflags="$ld" -o "$BIN/$b.tmp" "k8s.io/kubernetes/cmd/$b")
    mv "$BIN/$b.tmp" "$BIN/$b"
    stamp "$b" "$K8S_VERSION"
    log "built $b in $((SECONDS - t0))s"
  done
}

# etcd: a few-line main around etcdmain -----------------------------------------------------------
build_etcd() {
  built etcd "$ETCD_VERSION" && { log "etcd $ETCD_VERSION: already built"; return; }
  local mod="$ROOT/src/etcd"
  mkdir -p "$mod"
  cat >"$mod/main.go" <<'EOF'
// Command etcd is the etcd server, built from go.etcd.io/etcd/server/v3 for the DreamBot test harness.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  cat >"$mod/go.mod" <<EOF
module dreambot.local/etcd-build

go 1.26.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
  [ -f "$mod/go.sum" ] || : >"$mod/go.sum"
  log "building etcd $ETCD_VERSION"
  local t0=$SECONDS
  (cd "$mod" && go build -trimpath -ldflags="-s -w" -o "$BIN/etcd.tmp" .)
  mv "$BIN/etcd.tmp" "$BIN/etcd"
  stamp etcd "$ETCD_VERSION"
  log "built etcd in $((SECONDS - t0))s"
}

# helm --------------------------------------------------------------------------------------------
build_helm() {
  built helm "$HELM_VERSION" && { log "helm $HELM_VERSION: already built"; return; }
  local mod="$ROOT/src/helm"
  local major="${HELM_VERSION%%.*}"          # v3
  mkdir -p "$mod"
  cat >"$mod/go.mod" <<EOF
module dreambot.local/helm-build

go 1.26.0

require helm.sh/helm/$major $HELM_VERSION
EOF
  [ -f "$mod/go.sum" ] || : >"$mod/go.sum"
  # Like helm's Makefile: the default Kubernetes version of `helm template` and `helm lint` comes
  # from the client-go helm is built with (unset, helm assumes Kubernetes 1.20).
  local client_go k8s_major k8s_minor
  client_go="$(cd "$mod" && go list -m -f '{{.Version}}' k8s.io/client-go)"  # e.g. v0.37.0
  k8s_major=1                                      # client-go v0.N.x is Kubernetes 1.N
  k8s_minor="$(echo "$client_go" | cut -d. -f2)"
  local pkg ld="-s -w -X helm.sh/helm/$major/internal/version.version=$HELM_VERSION"
  for pkg in pkg/lint/rules pkg/chartutil; do
    ld="$ld -X helm.sh/helm/$major/$pkg.k8sVersionMajor=$k8s_major -X helm.sh/helm/$major/$pkg.k8sVersionMinor=$k8s_minor"
  done
  log "building helm $HELM_VERSION (default Kubernetes $k8s_major.$k8s_minor)"
  local t0=$SECONDS
  (cd "$mod" && go build -trimpath -ldflags="$ld" -o "$BIN/helm.tmp" "helm.sh/helm/$major/cmd/helm")
  mv "$BIN/helm.tmp" "$BIN/helm"
  stamp helm "$HELM_VERSION"
  log "built helm in $((SECONDS - t0))s"
}

build_etcd
build_helm
build_kubernetes
echo "$BIN"
