#!/usr/bin/env bash
# Re-lock the dependencies: resolve pyproject.toml's pins to their whole closure in uv.lock (exact
# versions and hashes of every package), then export from it the requirements files that the images and
# the uv bootstrap install from. Commit pyproject.toml, uv.lock and requirements/ together.
#   bash tools/lock.sh                                # after editing a pin in pyproject.toml
#   bash tools/lock.sh --upgrade-package botocore     # move one transitive package to its newest release
#   bash tools/lock.sh --check                        # fail when pyproject.toml, uv.lock and requirements/ disagree
set -euo pipefail
cd "$(dirname "$0")/.."
uv="$(bash tools/uv.sh)"

# One requirements file per environment an image installs (the dev .venv syncs uv.lock itself).
export_to() {  # FOLDER: write every exported file there
  local out="$1" args=(--frozen --no-emit-project --format requirements-txt --no-header)
  "${uv}" export "${args[@]}" >"${out}/operator.txt"
  "${uv}" export "${args[@]}" --extra runner --extra azure >"${out}/runner-cpu.txt"
  # The GPU runner: onnxruntime's CUDA builds instead of the CPU builds the runner extra names.
  "${uv}" export "${args[@]}" --extra runner --extra azure --extra cuda \
    --no-emit-package onnxruntime --no-emit-package onnxruntime-genai >"${out}/runner-cuda.txt"
  # uv itself, for tools/uv.sh to install with pip before there is a uv (the dev extra's pin).
  "${uv}" export "${args[@]}" --extra dev --no-annotate | awk '/^uv==/ {on = 1; print; next} on && /^ / {print; next} {on = 0}' \
    >"${out}/uv.txt"
}

if [[ "${1:-}" == --check ]]; then
  "${uv}" lock --check --offline || { echo "uv.lock is stale: run bash tools/lock.sh" >&2; exit 1; }
  fresh="$(mktemp -d)"
  trap 'rm -rf "${fresh}"' EXIT
  export_to "${fresh}"
  diff -r -u --exclude=with-uv.sh requirements "${fresh}" >&2 || { echo "requirements/ is stale: run bash tools/lock.sh" >&2; exit 1; }
  exit 0
fi
"${uv}" lock "$@"
export_to requirements
