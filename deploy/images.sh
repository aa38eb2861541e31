#!/usr/bin/env bash
# make images: build every image docker-compose.yml uses.
#
# Bases: the official python:3.11-slim and redis:7 (PYTHON_BASE, REDIS_BASE) where a
# registry answers; where none does, stand-ins bootstrapped from the Debian mirror apt uses
# (deploy/local-base.sh, local-python.Dockerfile, local-redis.Dockerfile). LOCAL_BASE=1
# forces the stand-ins, LOCAL_BASE=0 the official images; unset, it is detected.
# Proxy variables of the environment are passed as build arguments: Docker uses them while
# building and keeps them out of the images.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON_BASE=${PYTHON_BASE:-python:3.11-slim}
REDIS_BASE=${REDIS_BASE:-redis:7}
LOCAL_BASE=${LOCAL_BASE:-}
PULL_TIMEOUT=${PULL_TIMEOUT:-300}  # a slow registry is still a registry; none fails at once

have() { docker image inspect "$1" >/dev/null 2>&1; }
pull() { have "$1" || timeout "$PULL_TIMEOUT" docker pull -q "$1" >/dev/null 2>&1; }

if [ -z "$LOCAL_BASE" ]; then
  if pull "$PYTHON_BASE" && pull "$REDIS_BASE"; then
    LOCAL_BASE=0
  else
    echo "images: no registry answers for $PYTHON_BASE / $REDIS_BASE: building local bases"
    LOCAL_BASE=1
  fi
fi

proxy_args=()
for name in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
  if [ -n "${!name:-}" ]; then proxy_args+=(--build-arg "$name"); fi
done

log=$(mktemp)
trap 'rm -f "$log"' EXIT
build() {  # build <tag> <dockerfile> [docker build arguments...]
  local tag=$1 dockerfile=$2 started=$SECONDS
  shift 2
  # The whole build log only when it fails (a cached build says nothing worth reading).
  if ! docker build "${proxy_args[@]}" -f "$dockerfile" -t "$tag" "$@" . >"$log" 2>&1; then
    cat "$log" >&2
    echo "images: $tag FAILED ($dockerfile)" >&2
    exit 1
  fi
  echo "images: $tag ($((SECONDS - started)) s)"
}

if [ "$LOCAL_BASE" = 1 ]; then
  deploy/local-base.sh
  PYTHON_BASE=imgsearch-local/python:3.11
  REDIS_BASE=imgsearch-local/redis:7
  build "$PYTHON_BASE" deploy/local-python.Dockerfile
  build "$REDIS_BASE" deploy/local-redis.Dockerfile
fi

build image-search-redis:latest deploy/redis.Dockerfile --build-arg REDIS_BASE="$REDIS_BASE"
build image-search-gateway:latest deploy/gateway.Dockerfile --build-arg PYTHON_BASE="$PYTHON_BASE"
build image-search-worker:latest deploy/worker.Dockerfile --build-arg PYTHON_BASE="$PYTHON_BASE"
build image-search-flower:latest deploy/flower.Dockerfile --build-arg PYTHON_BASE="$PYTHON_BASE"
echo "images: done (bases $PYTHON_BASE, $REDIS_BASE)"
