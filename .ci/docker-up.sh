#!/usr/bin/env bash
# Brings up what the container tests need, idempotently, as root: the Docker
# Engine (Debian's docker.io), busybox-static (the offline base image's rootfs)
# and a local registry on 127.0.0.1:5000 (Debian's docker-registry).
# Every wait is bounded; a second call finds everything up and returns at once.
set -euo pipefail

log() { echo "== docker-up: $*"; }

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v curl >/dev/null 2>&1 || need+=(curl)
[ -x /bin/busybox ] || need+=(busybox-static)
[ -x /usr/bin/docker-registry ] || need+=(docker-registry)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

sock=/var/run/docker.sock
engine_up() { curl -fsS --max-time 2 --unix-socket "$sock" http://localhost/_ping >/dev/null 2>&1; }
if ! engine_up; then
  log "starting dockerd"
  mkdir -p /var/log
  nohup dockerd >/var/log/pipe-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    engine_up && break
    sleep 1
  done
  engine_up || { log "dockerd did not answer within 60 s; see /var/log/pipe-dockerd.log"; tail -20 /var/log/pipe-dockerd.log; exit 1; }
fi
log "docker engine up"

registry_up() { curl -fsS --max-time 2 http://127.0.0.1:5000/v2/ >/dev/null 2>&1; }
if ! registry_up; then
  dir=/var/lib/pipe-registry
  mkdir -p "$dir/data"
  cat >"$dir/config.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
YML
  log "starting docker-registry on 127.0.0.1:5000"
  nohup /usr/bin/docker-registry serve "$dir/config.yml" >/var/log/pipe-registry.log 2>&1 &
  for _ in $(seq 1 30); do
    registry_up && break
    sleep 1
  done
  registry_up || { log "the registry did not answer within 30 s"; tail -20 /var/log/pipe-registry.log; exit 1; }
fi
log "registry up on 127.0.0.1:5000"
