#!/usr/bin/env bash
# Builds the container images of the relay, agent and proxy with buildah
# (or podman): each a static binary on an empty base (examples/*/Containerfile).
#
#   ./hack/images.sh                 # all three, tagged clusterconnect/<name>:dev
#   ./hack/images.sh relay           # one
#   TAG=v0.1.0 ./hack/images.sh      # another tag, which is the version the binaries say
#
# The binary is built here, not in a builder image, so that no base image
# has to be pulled: FROM scratch needs no registry.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${TAG:-dev}
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(relay agent proxy)

# What the image says it is (OCI annotations, as labels): the tag is the
# version, which is also stamped into the binary (-version, the
# clusterconnect_build_info metric, the agent's User-Agent).
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
labels=(--label "org.opencontainers.image.version=$TAG" --label "org.opencontainers.image.revision=$revision"
  --label "org.opencontainers.image.source=https://github.com/clusterconnect/clusterconnect"
  --label "org.opencontainers.image.licenses=Apache-2.0")
if command -v buildah >/dev/null; then
  build() { buildah bud --quiet --layers=false "${labels[@]}" --label "org.opencontainers.image.title=clusterconnect-$4" -f "$1" -t "$2" "$3"; }
elif command -v podman >/dev/null; then
  build() { podman build --quiet "${labels[@]}" --label "org.opencontainers.image.title=clusterconnect-$4" -f "$1" -t "$2" "$3"; }
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
  CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X github.com/clusterconnect/clusterconnect/internal/version.Version=$TAG" -o "$ctx/$name" "./examples/$name"
  build "examples/$name/Containerfile" "clusterconnect/$name:$TAG" "$ctx" "$name" >/dev/null
  echo "clusterconnect/$name:$TAG"
done
