#!/usr/bin/env bash
# make container-stop: stop the Docker engine that `make container-images` started (and with it every
# container it runs). An engine this project did not start is left alone.
set -uo pipefail
cd "$(dirname "$0")/.."
marker=.containers/engine-started-here pidfile=.containers/dockerd.pid
[ -f "$marker" ] || { echo "no Docker engine was started by this project"; exit 0; }
pid=$(cat "$pidfile" 2>/dev/null)
# the pid must still be that dockerd (after a reboot it may be anything)
if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then
  DOCKER=/usr/bin/docker; [ -x "$DOCKER" ] || DOCKER=docker
  ids=$("$DOCKER" ps -q 2>/dev/null)
  [ -n "$ids" ] && "$DOCKER" stop --time 10 $ids >/dev/null
  kill "$pid"
  for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && { echo "dockerd (pid $pid) did not stop" >&2; exit 1; }
  echo "stopped the Docker engine (pid $pid)"
fi
rm -f "$marker"
