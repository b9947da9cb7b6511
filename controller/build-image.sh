#!/usr/bin/env bash
# build-image.sh — build the Gantry image without a daemon, where no base image can be pulled.
#
# controller/Dockerfile's default stage compiles in a rust:<version> builder image; on a machine that
# reaches no container registry that base image is out of reach, and so is the musl target for
# rustup. This script takes the other road the Dockerfile offers, its `from-binary` stage (FROM
# scratch, nothing to pull):
#
#   1. the workspace's release profile, linked statically against glibc
#      (-C target-feature=+crt-static for x86_64-unknown-linux-gnu);
#   2. `buildah bud --target from-binary` with vfs storage and chroot isolation (no daemon, no root
#      daemon socket, no network);
#   3. checks of the result: one layer holding /gantry, user 65532:65532, entrypoint /gantry, and the
#      binary runs inside the image's root filesystem (`gantry --version`).
#
# A statically linked glibc cannot load its NSS modules, so host-name lookups inside this image may
# fail. Gantry needs none in a cluster (the API server is reached by the IP in
# KUBERNETES_SERVICE_HOST, endpoints are IPs), but the musl build of the Dockerfile's default stage is
# the one to publish; this image proves the packaging (scratch, non-root, one static file).
#
# Output: the image ID on the last line of stdout. Knobs: GANTRY_IMAGE (tag, default
# the chart's image: <image.repository>:<appVersion>), GANTRY_IMAGE_ARCHIVE (also write an OCI archive there),
# GANTRY_BUILDAH_ROOT (storage, default ${GANTRY_CACHE_DIR:-~/.cache/gantry}/buildah).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'build-image: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

command -v buildah >/dev/null || die "buildah is not installed (Debian: apt-get install buildah)"
version=$(sed -nE 's/^version = "(.*)"/\1/p' controller/Cargo.toml | head -1)
# The tag is the image the chart runs (its image.repository at its appVersion), so what CI builds
# is what `helm install` pulls; a chart whose appVersion is not this crate's version is an error.
app_version=$(sed -nE 's/^appVersion: "?([^"]*)"?$/\1/p' charts/gantry/Chart.yaml | head -1)
repository=$(sed -nE '/^image:/,/^[^ ]/ s/^  repository: *"?([^"]*)"?$/\1/p' charts/gantry/values.yaml | head -1)
[[ $app_version == "$version" ]] || die "charts/gantry/Chart.yaml appVersion $app_version is not the crate version $version"
[[ -n $repository ]] || die "no image.repository in charts/gantry/values.yaml"
image=${GANTRY_IMAGE:-$repository:$version}
cache=${GANTRY_CACHE_DIR:-${HOME:?}/.cache/gantry}
root=${GANTRY_BUILDAH_ROOT:-$cache/buildah}
buildah=(buildah --root "$root/storage" --runroot "$root/run" --storage-driver vfs)

triple=x86_64-unknown-linux-gnu
[[ $(uname -m) == x86_64 ]] || die "only x86_64 hosts are handled here (use the Dockerfile's default stage elsewhere)"
log "cargo build --release (static, $triple)"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked -p gantry --bin gantry --target "$triple" >&2
binary=target/$triple/release/gantry
if readelf -d "$binary" | grep -q '(NEEDED)'; then
    die "$binary needs shared libraries: $(readelf -d "$binary" | grep '(NEEDED)' | tr -s ' ')"
fi

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/gantry-image"
# Stripped: the release profile keeps line tables for backtraces, which is most of the file.
install -s -m 0555 "$binary" "$context/gantry-image/gantry"
cp controller/Dockerfile "$context/Dockerfile"

# The previous build of this tag, if any, would stay behind as a dangling image.
"${buildah[@]}" rmi -f "$image" >/dev/null 2>&1 || true
log "buildah bud --target from-binary -t $image"
"${buildah[@]}" bud --isolation chroot --target from-binary -f "$context/Dockerfile" -t "$image" "$context" >&2

config=$("${buildah[@]}" inspect --type image "$image")
check() { # check JQ-LIKE-DESCRIPTION EXPECTED ACTUAL
    [[ $3 == "$2" ]] || die "$1: expected $2, got $3"
    log "ok: $1 = $3"
}
field() { python3 -c 'import json,sys; c=json.load(sys.stdin)["OCIv1"]["config"]; print(json.dumps(c.get(sys.argv[1])))' "$1" <<<"$config"; }
check user '"65532:65532"' "$(field User)"
check entrypoint '["/gantry"]' "$(field Entrypoint)"
layers=$(python3 -c 'import json,sys; print(len(json.load(sys.stdin)["OCIv1"]["rootfs"]["diff_ids"]))' <<<"$config")
check layers 1 "$layers"

# Run the binary in the image's root filesystem (no runtime needed: mount and chroot).
container=$("${buildah[@]}" from "$image")
mnt=$("${buildah[@]}" mount "$container")
files=$(cd "$mnt" && find . -mindepth 1 | sort | tr '\n' ' ')
check files "./gantry " "$files"
out=$(chroot --userspec=65532:65532 "$mnt" /gantry --version)
check "gantry --version in the image" "gantry $version" "$out"
"${buildah[@]}" umount "$container" >/dev/null
"${buildah[@]}" rm "$container" >/dev/null

size=$("${buildah[@]}" images --format '{{.Size}}' "$image" | head -1)
log "built $image ($size)"
if [[ -n ${GANTRY_IMAGE_ARCHIVE:-} ]]; then
    "${buildah[@]}" push "$image" "oci-archive:$GANTRY_IMAGE_ARCHIVE" >&2
    log "wrote $GANTRY_IMAGE_ARCHIVE"
fi
"${buildah[@]}" images --no-trunc --format '{{.ID}}' "$image" | head -1
