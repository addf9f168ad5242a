#!/usr/bin/env bash
# Builds what the tests need, then runs every check and test.
#
#   ./hack/test.sh            # everything CI runs
#   ./hack/test.sh -run Exec  # extra arguments go to `go test`
#
# What it gets when missing, none of it a service that starts:
#   kube-apiserver  built from the Go module proxy, cached in the user cache dir
#   etcd            built the same way (go.etcd.io/etcd/server/v3)
#   kubectl         built the same way when none is on PATH
#   buildah         Debian's package, to build the container images (the one
#                   system package; apt waits for another apt's lock)
#   etcd 3.4        Debian's etcd-server binary, taken out of its package into
#                   the user cache (apt-get download, dpkg-deb -x): not
#                   installed, never started but by the test that runs the
#                   fleet's directory on it
#   staticcheck     run from the Go module proxy at a pinned version
set -euo pipefail
cd "$(dirname "$0")/.."

STATICCHECK_VERSION=v0.8.2   # honnef.co/go/tools

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'hack/test.sh: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null || die "Go is not installed; install Go 1.26 or later"

# apt_install installs Debian packages, as root or through sudo, waiting
# up to 10 minutes for another apt or dpkg to let go of its lock.
apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  local wait=(-o DPkg::Lock::Timeout=600)
  if ! $sudo apt-get "${wait[@]}" update -qq; then
    die "apt-get update failed (another apt holding its lock for over 10 minutes?); install $* by hand and run again"
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get "${wait[@]}" install -y -qq "$@" >/dev/null ||
    die "apt-get install $* failed; install it by hand and run again"
}

if ! command -v buildah >/dev/null && ! command -v podman >/dev/null; then
  step "installing buildah (Debian package), to build the container images"
  if command -v apt-get >/dev/null; then
    apt_install buildah
  else
    echo "hack/test.sh: no buildah or podman, and no apt-get to install them: the image test will say so" >&2
  fi
fi

# Go's os.UserCacheDir, where the tests look.
cache="${XDG_CACHE_HOME:-$HOME/.cache}/clusterconnect"
etcd34="$cache/etcd-3.4/etcd"
if [ -z "${ETCD34:-}" ] && [ ! -x "$etcd34" ]; then
  step "etcd 3.4 (Debian's etcd-server binary, taken out of its package: nothing installed or started)"
  if command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null; then
    tmp=$(mktemp -d)
    if ! (cd "$tmp" && apt-get download -qq etcd-server >/dev/null 2>&1); then
      sudo=""
      [ "$(id -u)" = 0 ] || sudo="sudo"
      $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq || die "apt-get update failed; set ETCD34 to an etcd 3.4 binary and run again"
      (cd "$tmp" && apt-get download -qq etcd-server >/dev/null 2>&1) || die "apt-get download etcd-server failed; set ETCD34 to an etcd 3.4 binary and run again"
    fi
    dpkg-deb -x "$tmp"/etcd-server_*.deb "$tmp/x"
    # The whole output is read before it is looked at: under pipefail, a
    # reader that stops at the first line (head, grep -q) can leave etcd
    # writing the rest into a closed pipe, and its SIGPIPE fails the run.
    version=$("$tmp/x/usr/bin/etcd" --version)
    version=${version%%$'\n'*}
    if [[ $version == "etcd Version: 3.4."* ]]; then
      mkdir -p "$(dirname "$etcd34")"
      cp "$tmp/x/usr/bin/etcd" "$etcd34.tmp" && mv "$etcd34.tmp" "$etcd34"
      echo "$version"
    else
      echo "hack/test.sh: Debian's etcd-server is not 3.4 here ($version); set ETCD34 to an etcd 3.4 binary" >&2
    fi
    rm -rf "$tmp"
  else
    echo "hack/test.sh: no apt-get to fetch etcd 3.4: set ETCD34 to an etcd 3.4 binary, or the 3.4 run will say so" >&2
  fi
fi

step "kube-apiserver, etcd, kubectl and promtool"
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
