#!/usr/bin/env bash
# Sets up everything the project needs, from its own files only.
#   scripts/setup.sh core   Python venv (.venv) with the package and its runtime deps
#   scripts/setup.sh all    + test/dev deps, Debian packages (redis, promtool, chromium),
#                           Kafka jars (Maven Central) and the Kubernetes binaries (Go module proxy)
# Heavy artefacts are cached under ${DREAMBOT_CACHE:-$HOME/.cache/dreambot}, keyed by version.
set -euo pipefail
cd "$(dirname "$0")/.."
level=${1:-core}
PY=${PYTHON:-python3}
stamp=.venv/.dreambot-setup-$level

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
# Reinstall only when the dependency declaration changed since the last setup at this level.
want=$(sha256sum pyproject.toml setup.py | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  if [ "$level" = all ]; then extras="test,dev,bench,services,operator,mlops"; else extras="services"; fi
  .venv/bin/pip install -q -e ".[$extras]"
  echo "$want" > "$stamp"
fi

if [ "$level" = all ]; then
  bash scripts/install-system-deps.sh
  [ -x scripts/fetch-kafka.sh ] && bash scripts/fetch-kafka.sh >/dev/null
  [ -x scripts/build-k8s.sh ] && bash scripts/build-k8s.sh >/dev/null
fi
exit 0
