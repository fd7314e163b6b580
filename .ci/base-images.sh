#!/usr/bin/env bash
# Builds the local Python base images the integration tests use. No registry is reachable on our
# machines, so a Debian root file system is made with debootstrap, imported, and given python3.
# Idempotent: an image that already exists is kept.
set -euo pipefail
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
rootfs_image=compat-matrix-test/bookworm-rootfs:local
py_image=${COMPAT_MATRIX_TEST_BASE:-compat-matrix-test/bookworm-py311:local}

if ! docker image inspect "$rootfs_image" >/dev/null 2>&1; then
  dir=$(mktemp -d)
  trap 'rm -rf "$dir"' EXIT
  debootstrap --variant=minbase bookworm "$dir" "$mirror" >/dev/null
  tar -C "$dir" -c . | docker import - "$rootfs_image" >/dev/null
fi

if ! docker image inspect "$py_image" >/dev/null 2>&1; then
  printf 'FROM %s\nRUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv && rm -rf /var/lib/apt/lists/*\n' \
    "$rootfs_image" | docker build --network host -q -t "$py_image" - >/dev/null
fi
echo "base image: $py_image"
