#!/usr/bin/env bash
# Makes the local Docker Engine a one-node swarm manager for the swarm
# executor's tests, idempotently: an engine already in a swarm is left as is.
# Setup only: pipe itself talks to the Engine API through bollard.
set -euo pipefail

state=$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo unknown)
if [ "$state" = "active" ]; then
  echo "== swarm-up: already a swarm node"
  exit 0
fi
echo "== swarm-up: docker swarm init (one node, on 127.0.0.1)"
docker swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:2377 >/dev/null
for _ in $(seq 1 30); do
  [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = "true" ] && exit 0
  sleep 1
done
echo "== swarm-up: the swarm manager did not become available within 30 s" >&2
exit 1
