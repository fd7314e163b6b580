#!/usr/bin/env bash
# Brings up what the integration tests need on one of our machines: Debian's Docker Engine
# (installed if missing, started if not answering) and the local base images (no registry here).
# Prints the PID of a dockerd it started to $COMPAT_MATRIX_DOCKERD_PIDFILE, if set.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io debootstrap >/dev/null
fi

if ! timeout 10 docker info >/dev/null 2>&1; then
  log=${TMPDIR:-/tmp}/compat-matrix-dockerd.log
  dockerd >"$log" 2>&1 &
  pid=$!
  [ -n "${COMPAT_MATRIX_DOCKERD_PIDFILE:-}" ] && echo "$pid" >"$COMPAT_MATRIX_DOCKERD_PIDFILE"
  for _ in $(seq 60); do
    timeout 5 docker info >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { echo "dockerd died; its log:" >&2; tail -20 "$log" >&2; exit 1; }
    sleep 1
  done
  timeout 5 docker info >/dev/null 2>&1 || { echo "dockerd did not answer in 60 s" >&2; exit 1; }
fi
echo "engine: $(docker version --format '{{.Server.Version}}')"
"$here/base-images.sh"
