#!/usr/bin/env bash
# Builds the container images of the relay, agent and proxy with buildah
# (or podman): each a static binary on an empty base (examples/*/Containerfile),
# for amd64 and arm64, under a manifest list.
#
#   ./hack/images.sh                 # all three: clusterconnect/<name>:<tag>
#   ./hack/images.sh relay           # one
#   TAG=v0.1.0 ./hack/images.sh      # another tag, which is the version the binaries say
#   ARCHES=amd64 ./hack/images.sh    # one architecture
#   ./hack/images.sh --tag           # print the tag it would use, and stop
#
# The tag is the charts' appVersion unless TAG says otherwise, so that the
# charts' default images are the ones built here. Each architecture's
# image is clusterconnect/<name>:<tag>-<arch>; clusterconnect/<name>:<tag>
# is the manifest list of them (push it with `buildah manifest push --all`).
#
# The binaries are cross-compiled here (CGO_ENABLED=0), not in a builder
# image, so that no base image has to be pulled and nothing is emulated:
# FROM scratch needs no registry and runs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

appVersion=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/clusterconnect-agent/Chart.yaml)
TAG=${TAG:-$appVersion}
if [ "${1:-}" = --tag ]; then
  echo "$TAG"
  exit 0
fi
ARCHES=${ARCHES:-amd64 arm64}
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
  tool=buildah
  build() { buildah bud --quiet --layers=false --os linux --arch "$5" "${labels[@]}" --label "org.opencontainers.image.title=clusterconnect-$4" -f "$1" -t "$2" "$3"; }
elif command -v podman >/dev/null; then
  tool=podman
  build() { podman build --quiet --os linux --arch "$5" "${labels[@]}" --label "org.opencontainers.image.title=clusterconnect-$4" -f "$1" -t "$2" "$3"; }
else
  echo "hack/images.sh: needs buildah or podman (Debian: apt-get install buildah)" >&2
  exit 1
fi

roots=/etc/ssl/certs/ca-certificates.crt
[ -f "$roots" ] || { echo "hack/images.sh: $roots is missing (Debian: apt-get install ca-certificates)" >&2; exit 1; }

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
for name in "${names[@]}"; do
  [ -f "examples/$name/Containerfile" ] || { echo "hack/images.sh: no examples/$name/Containerfile" >&2; exit 1; }
  list="clusterconnect/$name:$TAG"
  "$tool" manifest rm "$list" >/dev/null 2>&1 || true
  "$tool" rmi "$list" >/dev/null 2>&1 || true
  "$tool" manifest create "$list" >/dev/null
  for arch in $ARCHES; do
    dir="$ctx/$name-$arch"
    mkdir -p "$dir"
    cp "$roots" "$dir/ca-certificates.crt"
    CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -ldflags="-s -w -X github.com/clusterconnect/clusterconnect/internal/version.Version=$TAG" -o "$dir/$name" "./examples/$name"
    build "examples/$name/Containerfile" "$list-$arch" "$dir" "$name" "$arch" >/dev/null
    "$tool" manifest add "$list" "$list-$arch" >/dev/null
    echo "$list-$arch"
  done
  echo "$list"
done
