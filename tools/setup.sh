#!/usr/bin/env bash
# Set up a development environment from scratch: the Python virtualenv (.venv) with the runner and
# dev extras, and the pinned control-plane binaries (built from Go modules, cached under ~/.cache).
# Idempotent and cached: a warm run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
stamp=".venv/.olivekube-deps-$(sha256sum pyproject.toml | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  echo "[setup] installing Python dependencies into .venv (pip cache: ~/.cache/pip)" >&2
  [[ -x .venv/bin/python ]] || "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev,runner,azure]'
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
