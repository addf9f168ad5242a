#!/usr/bin/env bash
# Installs what the tests need, then runs every check and test.
#
#   ./hack/test.sh            # everything CI runs
#   ./hack/test.sh -run Exec  # extra arguments go to `go test`
#
# What it installs when missing:
#   etcd            Debian's etcd-server package (needs root, or sudo)
#   kube-apiserver  built from the Go module proxy, cached in the user cache dir
#   kubectl         built the same way when none is on PATH
#   buildah         Debian's package, to build the container images
#   promtool        Debian's prometheus package, to check the metrics
#   staticcheck     run from the Go module proxy at a pinned version
set -euo pipefail
cd "$(dirname "$0")/.."

STATICCHECK_VERSION=v0.8.2   # honnef.co/go/tools

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'hack/test.sh: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null || die "Go is not installed; install Go 1.26 or later"

# apt_install installs Debian packages, as root or through sudo.
apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

if ! command -v etcd >/dev/null && [ -z "${ETCD:-}" ]; then
  step "installing etcd (Debian package etcd-server)"
  command -v apt-get >/dev/null || die "etcd is missing and this is not a Debian-like system: install etcd 3.4+ and put it on PATH (or set ETCD)"
  apt_install etcd-server
  command -v etcd >/dev/null || die "etcd-server installed but etcd is not on PATH"
fi

if ! command -v buildah >/dev/null && ! command -v podman >/dev/null; then
  step "installing buildah (Debian package), to build the container images"
  if command -v apt-get >/dev/null; then
    apt_install buildah
  else
    echo "hack/test.sh: no buildah or podman, and no apt-get to install them: the image test will say so" >&2
  fi
fi

if ! command -v promtool >/dev/null; then
  step "installing promtool (Debian package prometheus), to check the metrics"
  if command -v apt-get >/dev/null; then
    apt_install prometheus
  else
    echo "hack/test.sh: no promtool, and no apt-get to install it: the metrics test will say so" >&2
  fi
fi

step "kube-apiserver and kubectl"
go run ./internal/testenv/kubetest/cmd/kubetest install

step "gofmt"
unformatted=$(gofmt -l .)
[ -z "$unformatted" ] || die "gofmt would change these files (run gofmt -w): $unformatted"

step "go vet"
go vet ./...

step "staticcheck $STATICCHECK_VERSION"
go run "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION" ./...

step "go test -race"
# In CI every test runs: a cached pass would not notice a changed kube-apiserver
# or kubectl, which the Go test cache does not track.
count=()
[ -z "${CI:-}" ] || [ "${CI}" = false ] || count=(-count=1)
go test -race -timeout 30m "${count[@]}" "$@" ./...
