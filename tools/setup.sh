#!/usr/bin/env bash
# Set up a development environment from scratch: the Python virtualenv (.venv) with the runner, azure and
# dev extras, installed by uv exactly as uv.lock says (every package's version and hashes; uv's download
# cache: ~/.cache/uv), and the pinned control-plane binaries (built from Go modules, cached under
# ~/.cache). Idempotent and cached: a warm run takes seconds. Fails when uv.lock is stale.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
stamp=".venv/.olivekube-deps-$(cat pyproject.toml uv.lock | sha256sum | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  echo "[setup] installing uv.lock into .venv (uv's cache: ~/.cache/uv)" >&2
  uv="$(bash tools/uv.sh)"
  UV_PYTHON_DOWNLOADS=never "$uv" sync --quiet --locked --python "$PY" --extra dev --extra runner --extra azure
  rm -f .venv/.olivekube-deps-*
  touch "$stamp"
fi

# A headless browser, for the test that opens the evaluation report (Debian's chromium).
command -v chromium-headless-shell >/dev/null || command -v chromium >/dev/null || {
  apt-get update -qq && apt-get install -y -qq chromium-headless-shell >/dev/null
}

if [[ "${OLIVEKUBE_SKIP_CONTROLPLANE:-0}" != 1 ]]; then
  command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl >/dev/null; }
  bash tools/controlplane/build.sh >/dev/null
fi
