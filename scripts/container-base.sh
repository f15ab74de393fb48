#!/usr/bin/env bash
# Make the local Debian bookworm base image (python 3.11, pip, venv) that stands in for
# python:3.11-slim where no registry serves base images. Idempotent: does nothing when the
# image exists. Needs root, debootstrap and podman (apt-get install debootstrap podman).
set -euo pipefail
IMAGE="${1:-localhost/vae-cats-base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if podman image exists "$IMAGE"; then
    echo "base image $IMAGE exists"
    exit 0
fi
root="$(mktemp -d /tmp/vae-cats-base.XXXXXX)"
trap 'rm -rf "$root"' EXIT
echo "debootstrap bookworm into $root"
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$root" "$MIRROR" >"$root.log" 2>&1 || { tail -20 "$root.log"; exit 1; }
rm -f "$root.log"
# Slim it as the official slim images do: no apt lists, docs or man pages.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/info/*
tar -C "$root" -c . | podman import --change 'CMD ["python3"]' - "$IMAGE"
echo "base image $IMAGE made"
