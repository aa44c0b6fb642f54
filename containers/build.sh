#!/usr/bin/env bash
# make container-images: a Docker engine, then stand-ins for AWS's PyTorch training and inference
# containers, tagged with the ECR URIs the SageMaker SDK resolves, so local mode finds them here and
# never pulls. Cached: an image whose inputs (Dockerfile, requirements) have not changed is not rebuilt.
# Prints where the time went. Leaves the engine running for the workflow (make container-stop stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=.containers                       # engine log and pid, wheelhouse (ignored by git)
PYTHON=${PYTHON:-python3}               # the host's pip fills the wheelhouse: it knows this machine's indexes
VENV_PYTHON=${VENV_PYTHON:-.venv/bin/python}
CONFIG_FILES=${CONFIG_FILES:-config.yaml config/local_container.yaml}
WHEEL_PORT=${WHEEL_PORT:-38471}
PREFIX=dogbreed-stand-in
LABEL=org.dogbreed.stand-in            # on every image built here: make container-clean removes only these
export DOCKER_BUILDKIT=0                # the classic builder: no buildx plugin needed
DOCKER=/usr/bin/docker; [ -x "$DOCKER" ] || DOCKER=docker
mkdir -p "$STATE"

timed() {  # timed "what" command...: run it, then say how long it took
  local what=$1 start=$SECONDS; shift
  "$@"
  printf '[container-images] %-34s %4d s\n' "$what" $((SECONDS - start))
}

install_packages() {  # Debian's packages, as root
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "missing: $* — install Docker Engine with Compose, and debootstrap, then start the engine (or run this as root on Debian)" >&2
    exit 1
  fi
  apt-get update -qq && apt-get install -y -qq "$@" >/dev/null
}

engine() {
  if "$DOCKER" info >/dev/null 2>&1; then
    echo "a Docker engine is running"
  else
    command -v dockerd >/dev/null || { install_packages docker.io docker-compose; DOCKER=/usr/bin/docker; }
    [ "$(id -u)" = 0 ] || { echo "no Docker engine is running: start it (sudo dockerd, or Docker Desktop)" >&2; exit 1; }
    # its own session: a Ctrl-C in make's terminal must not take the engine down with it
    setsid nohup dockerd --storage-driver=overlay2 --pidfile "$PWD/$STATE/dockerd.pid" \
      >"$STATE/dockerd.log" 2>&1 </dev/null &
    touch "$STATE/engine-started-here"
    for _ in $(seq 120); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 0.5; done
    "$DOCKER" info >/dev/null 2>&1 || { echo "dockerd did not start; see $STATE/dockerd.log" >&2; exit 1; }
    echo "started dockerd (log: $STATE/dockerd.log)"
  fi
  # local mode runs `docker compose` (the plugin) or, without it, docker-compose
  docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null || install_packages docker-compose
}

have_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

base_image() {  # Debian 12 from Debian's package mirror: no container registry is needed
  BASE=$PREFIX/debian:bookworm
  have_image "$BASE" && { echo "$BASE is there"; return; }
  command -v debootstrap >/dev/null || install_packages debootstrap
  local root; root=$(mktemp -d)
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,procps bookworm "$root" >"$STATE/debootstrap.log"
  echo "deb http://deb.debian.org/debian-security bookworm-security main" >>"$root/etc/apt/sources.list"
  rm -f "$root/etc/hostname" && : >"$root/etc/resolv.conf"   # debootstrap copies this host's
  tar -C "$root" -c . | "$DOCKER" import --change "LABEL $LABEL=true" - "$BASE" >/dev/null
  rm -rf "$root"
}

wheelhouse() {  # every wheel the images install, fetched (each file checked against its lock's hash) or built once
  local stamp; stamp=$(cat containers/constraints.txt containers/requirements-*.lock | sha256sum | cut -c1-16)
  [ -f "$STATE/wheelhouse/.stamp-$stamp" ] && { echo "wheelhouse is up to date"; return; }
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    || { echo "the wheelhouse needs Python 3.11 (the images' Python): set PYTHON=python3.11" >&2; exit 1; }
  rm -rf "$STATE/wheelhouse" && mkdir -p "$STATE/wheelhouse"
  # One lock per layer, as the images install them, which `make lock` resolves under the project's pins
  # (containers/constraints.txt: requirements.txt less extras, which pip takes in no constraints)
  for layer in base training inference; do
    "$PYTHON" -m pip wheel --quiet --wheel-dir "$STATE/wheelhouse" --require-hashes --no-deps \
      -r "containers/requirements-$layer.lock" >"$STATE/pip-$layer.log" 2>&1 \
      || { grep -v "is neither a file nor a directory" "$STATE/pip-$layer.log" >&2; echo "pip could not fetch the $layer wheels" >&2; exit 1; }
  done
  # each image installs its layer's locked versions and no others (the wheelhouse holds every layer's): the
  # lock less its hashes, which a wheel built here from a locked sdist would not match
  for layer in base training inference; do
    sed -E '/^[[:space:]]+--hash=/d; s/ \\$//' "containers/requirements-$layer.lock" >"$STATE/wheelhouse/$layer-pins.txt"
  done
  touch "$STATE/wheelhouse/.stamp-$stamp"
}

build() {  # build NAME DOCKERFILE FROM_ARG FILES...: skipped when an image of the same inputs exists
  local name=$1 dockerfile=$2 from=$3 hash; shift 3
  hash=$( (echo "$from"; cd containers && cat "$dockerfile" constraints.txt "$@") | sha256sum | cut -c1-12)
  BUILT=$PREFIX/$name:$hash
  have_image "$BUILT" && { echo "$BUILT is there"; return; }
  "$DOCKER" build --quiet --network host --build-arg "WHEELS=http://127.0.0.1:$WHEEL_PORT/" $from \
    -f "containers/$dockerfile" -t "$BUILT" containers >/dev/null
}

serve_wheels() {
  "$PYTHON" -m http.server --bind 127.0.0.1 --directory "$STATE/wheelhouse" "$WHEEL_PORT" >/dev/null 2>&1 &
  SERVER=$!
  trap 'kill $SERVER 2>/dev/null' EXIT
  for _ in $(seq 50); do
    "$PYTHON" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' \
      "$WHEEL_PORT" 2>/dev/null && return
    sleep 0.2
  done
  echo "the wheel server on 127.0.0.1:$WHEEL_PORT did not start (port taken? set WHEEL_PORT)" >&2; exit 1
}

total=$SECONDS
timed "engine" engine
timed "base image (debootstrap)" base_image
timed "wheelhouse (host pip)" wheelhouse
serve_wheels
timed "python layer (torch)" build pytorch-base base.Dockerfile "--build-arg BASE_IMAGE=$BASE" requirements-base.txt \
  requirements-base.lock
PYTHON_IMAGE=$BUILT
timed "training image" build pytorch-training training.Dockerfile "--build-arg PYTHON_IMAGE=$PYTHON_IMAGE" \
  requirements-training.txt requirements-training.lock
TRAINING=$BUILT
timed "inference image" build pytorch-inference inference.Dockerfile "--build-arg PYTHON_IMAGE=$PYTHON_IMAGE" \
  requirements-inference.txt requirements-inference.lock dockerd-entrypoint.py
INFERENCE=$BUILT
# the URIs the SDK resolves for the configured versions (CPU and GPU: the stand-ins carry CUDA torch)
uris=$(PYTHONPATH=workflow "$VENV_PYTHON" -m dogbreed.backends.containers image-uris $CONFIG_FILES)
while read -r scope uri; do
  image=$TRAINING; [ "$scope" = inference ] && image=$INFERENCE
  "$DOCKER" tag "$image" "$uri"
  echo "tagged $uri"
done <<<"$uris"
printf '[container-images] %-34s %4d s\n' "total" $((SECONDS - total))
