#!/usr/bin/env bash
# Build and run the project's images with buildah (no Docker engine needed).
#
#   scripts/container.sh deps                 apt-get install buildah, podman, debootstrap if missing
#   scripts/container.sh build predict|train  build dockerfiles/<name>.dockerfile as <name>:latest
#   scripts/container.sh run-predict CKPT OUT run predict:latest on CKPT, PNGs into OUT
#   scripts/container.sh size NAME            image size in bytes
#
# The Dockerfiles are standard; this script only supplies what this machine needs: a local
# Debian base image (scripts/container-base.sh) instead of python:3.11-slim, the host's CA
# bundle for pip, and the local wheel folders (/opt/wheels holds the CPU-only torch wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
BASE_IMAGE="${BASE_IMAGE:-localhost/vae-cats-base:bookworm}"
HOST_CA="${HOST_CA:-/etc/ssl/certs/ca-certificates.crt}"
WHEELS="${WHEELS:-/opt/wheels}"

deps() {
    local missing=()
    for tool in buildah podman debootstrap; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        echo "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

build() {
    local name="$1"
    deps
    bash scripts/container-base.sh "$BASE_IMAGE"
    # Layer caching (BUILDAH_LAYERS=true) pays off for repeated local builds; a one-off CI
    # build is faster without it: no intermediate commit of the gigabyte-sized layers.
    local args=(bud --isolation chroot --layers="${BUILDAH_LAYERS:-false}"
        -f "dockerfiles/$name.dockerfile" -t "$name:latest" --build-arg "BASE_IMAGE=$BASE_IMAGE")
    if [[ -f "$HOST_CA" ]]; then
        args+=(-v "$HOST_CA:/etc/ssl/certs/host-ca.crt:ro"
            --build-arg PIP_CERT=/etc/ssl/certs/host-ca.crt)
    fi
    local extra=()
    for index in /opt/pypi /opt/pypi-more; do
        if [[ -d "$index/simple" ]]; then
            args+=(-v "$index:$index:ro")
            extra+=("file://$index/simple")
        fi
    done
    ((${#extra[@]})) && args+=(--build-arg "PIP_EXTRA_INDEX_URL=${extra[*]}")
    if [[ "$name" == predict ]]; then
        # The CPU torch wheel on this machine; a real Docker build takes it from the PyTorch
        # CPU index instead (the Dockerfile's defaults).
        local wheel
        wheel="$(ls "$WHEELS"/torch-*+cpu-cp311-*.whl 2>/dev/null | sort -V | tail -1)"
        [[ -n "$wheel" ]] || { echo "no CPU torch wheel in $WHEELS" >&2; exit 1; }
        local version
        version="$(basename "$wheel" | cut -d- -f2)"
        args+=(-v "$WHEELS:$WHEELS:ro" --build-arg "PIP_FIND_LINKS=$WHEELS"
            --build-arg TORCH_INDEX_URL=https://pypi.org/simple
            --build-arg "TORCH_VERSION=$version")
    fi
    local start=$SECONDS
    buildah "${args[@]}"
    echo "built $name:latest in $((SECONDS - start)) s, $(size "$name") bytes"
}

size() {
    podman image inspect --format '{{.Size}}' "$1:latest"
}

run_predict() {
    local out models ctr
    out="$(realpath -m "$2")"
    # The image runs as uid 1000: a readable copy of the checkpoint (a strict umask on the
    # host may leave it unreadable to others) in a models folder, and an output folder it
    # may write to.
    models="$(mktemp -d /tmp/vae-cats-models.XXXXXX)"
    install -m 0644 "$1" "$models/model.ckpt"
    chmod 0755 "$models"
    mkdir -p "$out"
    chmod 0777 "$out"
    ctr="$(buildah from predict:latest)"
    trap 'buildah rm "$ctr" >/dev/null; rm -rf "$models"' RETURN
    buildah run --isolation chroot -v "$models:/models:ro" -v "$out:/out" "$ctr" -- \
        vae-cats-predict --model /models/model.ckpt --n 16 --out /out
}

case "${1:-}" in
    deps) deps ;;
    build) build "$2" ;;
    run-predict) run_predict "$2" "$3" ;;
    size) size "$2" ;;
    *) sed -n '2,8p' "$0" >&2; exit 2 ;;
esac
