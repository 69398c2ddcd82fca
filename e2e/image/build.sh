#!/usr/bin/env bash
# Builds the repository's Dockerfile for real, daemonless, with Debian's `buildah`, and writes the image
# as a docker-archive for `ctr image import`. No registry is reachable here, so the two base images the
# Dockerfile takes as build arguments are made locally from Debian's packages with `mmdebstrap`:
#   BUILDER_IMAGE  bookworm + gcc/g++/make/pkg-config + this host's Rust toolchain (as rust:<v>-bookworm
#                  lays it out: /usr/local/cargo/bin, /usr/local/rustup) and the host's CA bundle
#   RUNTIME_IMAGE  bookworm minbase (the role of debian:bookworm-slim)
# Both are cached in buildah's store by name; the cargo registry and target dir are the Dockerfile's own
# cache mounts, so a rebuild after a source change recompiles only what changed.
# usage: e2e/image/build.sh OUT.tar TAG   (last line: "image TAG size S archive N bytes revision COMMIT")
# env:   DEBIAN_MIRROR (default http://deb.debian.org/debian), UNISONDB_IMAGE_REBUILD_BASES=1
set -euo pipefail
out=${1:?usage: build.sh OUT.tar TAG}; tag=${2:?usage: build.sh OUT.tar TAG}
repo=$(cd "$(dirname "$0")/../.." && pwd)
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
for t in buildah mmdebstrap rustc; do
  command -v "$t" >/dev/null || { echo "build.sh: $t missing: run scripts/install-deps.sh" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "build.sh: needs root (buildah's store, mmdebstrap)" >&2; exit 2; }
# chroot isolation: RUN steps need no user namespaces or CNI; the network is the host's (crates.io, Debian).
export BUILDAH_ISOLATION=chroot
rust_version=$(rustc --version | awk '{print $2}')
toolchain=$(rustc --print sysroot)
builder_image="localhost/unisondb-e2e/rust:${rust_version}-${suite}"
runtime_image="localhost/unisondb-e2e/debian:${suite}-slim"
work=$(mktemp -d /var/tmp/unisondb-image.XXXXXX)
trap 'rm -rf "$work"' EXIT

have() { [ -z "${UNISONDB_IMAGE_REBUILD_BASES:-}" ] && buildah inspect --type image "$1" >/dev/null 2>&1; }

# One rootfs tarball from Debian's packages into an image named $1, with env/cmd like the public one.
base_image() {
  local name=$1 rootfs=$2; shift 2
  local c
  c=$(buildah from scratch)
  buildah add --quiet "$c" "$rootfs" / >/dev/null
  buildah config "$@" --cmd bash "$c"
  buildah commit --quiet --rm "$c" "$name" >/dev/null
}

if ! have "$runtime_image"; then
  echo "build.sh: making $runtime_image with mmdebstrap ($mirror)"
  # As debian:<suite>-slim is made: no docs, man pages or locales, and apt keeps no package caches
  # (both persist in the image's dpkg/apt config, so the Dockerfile's apt-get honours them too).
  mmdebstrap --quiet --variant=minbase \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --aptopt='Dir::Cache::pkgcache ""' --aptopt='Dir::Cache::srcpkgcache ""' \
    --customize-hook='rm -rf "$1"/var/cache/apt/*.bin "$1"/var/lib/apt/lists/*' \
    "$suite" "$work/runtime.tar" "$mirror"
  base_image "$runtime_image" "$work/runtime.tar" \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
fi

if ! have "$builder_image"; then
  echo "build.sh: making $builder_image with mmdebstrap and the host's Rust $rust_version ($toolchain)"
  mmdebstrap --quiet --variant=minbase --include=gcc,g++,make,libc6-dev,pkg-config,ca-certificates \
    "$suite" "$work/builder.tar" "$mirror"
  # The toolchain where the official rust image keeps it; cargo/rustc called directly (no rustup).
  tc="usr/local/rustup/toolchains/${rust_version}-x86_64-unknown-linux-gnu"
  mkdir -p "$work/rust/$tc" "$work/rust/usr/local/cargo/bin"
  cp -a "$toolchain/lib" "$work/rust/$tc/"
  mkdir -p "$work/rust/$tc/bin"
  for b in cargo rustc rustdoc; do
    cp -a "$toolchain/bin/$b" "$work/rust/$tc/bin/"
    ln -s "/$tc/bin/$b" "$work/rust/usr/local/cargo/bin/$b"
  done
  # Trust what this host trusts (an egress proxy's CA, say), so cargo reaches crates.io from the build.
  mkdir -p "$work/rust/etc/ssl/certs"
  cp /etc/ssl/certs/ca-certificates.crt "$work/rust/etc/ssl/certs/"
  tar -C "$work/rust" -cf "$work/rust.tar" usr etc
  c=$(buildah from scratch)
  buildah add --quiet "$c" "$work/builder.tar" / >/dev/null
  buildah add --quiet "$c" "$work/rust.tar" / >/dev/null
  buildah config --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env CARGO_HOME=/usr/local/cargo --env RUSTUP_HOME=/usr/local/rustup --env RUST_VERSION="$rust_version" \
    --cmd bash "$c"
  buildah commit --quiet --rm "$c" "$builder_image" >/dev/null
fi

# Earlier builds' untagged stage images only take disk (the cargo cache mounts keep the build warm).
buildah rmi --prune >/dev/null 2>&1 || true
echo "build.sh: buildah bud (BUILDER_IMAGE=$builder_image RUNTIME_IMAGE=$runtime_image)"
revision=$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)
buildah bud --quiet --layers --network host \
  --build-arg BUILDER_IMAGE="$builder_image" --build-arg RUNTIME_IMAGE="$runtime_image" \
  --build-arg REVISION="$revision" \
  -t "$tag" -f "$repo/Dockerfile" "$repo" >/dev/null
rm -f "$out"
buildah push --quiet "$tag" "docker-archive:$out:$tag" >/dev/null
size=$(buildah inspect --type image --format '{{.ImageAnnotations}}' "$tag" >/dev/null; \
       buildah images --noheading --format '{{.Size}}' "$tag" | head -1)
echo "image $tag size ${size// /} archive $(stat -c %s "$out") bytes revision $revision"
