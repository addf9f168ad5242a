#!/usr/bin/env bash
# Builds the container images of the relay, agent and proxy with buildah
# (or podman): each a static binary on an empty base (examples/*/Containerfile).
#
#   ./hack/images.sh                 # all three, tagged clusterconnect/<name>:dev
#   ./hack/images.sh relay           # one
#   TAG=v0.1.0 ./hack/images.sh      # another tag
#
# The binary is built here, not in a builder image, so that no base image
# has to be pulled: FROM scratch needs no registry.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${TAG:-dev}
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(relay agent proxy)

if command -v buildah >/dev/null; then
  build() { buildah bud --quiet --layers=false -f "$1" -t "$2" "$3"; }
elif command -v podman >/dev/null; then
  build() { podman build --quiet -f "$1" -t "$2" "$3"; }
else
  echo "hack/images.sh: needs buildah or podman (Debian: apt-get install buildah)" >&2
  exit 1
fi

roots=/etc/ssl/certs/ca-certificates.crt
[ -f "$roots" ] || { echo "hack/images.sh: $roots is missing (Debian: apt-get install ca-certificates)" >&2; exit 1; }

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$roots" "$ctx/ca-certificates.crt"
for name in "${names[@]}"; do
  [ -f "examples/$name/Containerfile" ] || { echo "hack/images.sh: no examples/$name/Containerfile" >&2; exit 1; }
  CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$ctx/$name" "./examples/$name"
  build "examples/$name/Containerfile" "clusterconnect/$name:$TAG" "$ctx" >/dev/null
  echo "clusterconnect/$name:$TAG"
done
