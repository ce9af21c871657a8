#!/usr/bin/env bash
# Print the path of the pinned uv, installing it first when it is not there: pip installs it from PyPI
# with the hashes of requirements/uv.txt (written from uv.lock by tools/lock.sh) into a folder under
# ~/.cache/olivekube keyed by that file, so a new pin is a new folder and an unchanged one is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
dir="${HOME}/.cache/olivekube/uv/$(sha256sum requirements/uv.txt | cut -c1-16)"
if [[ ! -x "${dir}/bin/uv" ]]; then
  echo "[uv] installing $(grep -o '^uv==[^ ]*' requirements/uv.txt) into ${dir}" >&2
  rm -rf "${dir}.partial"
  "$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps --require-hashes --target "${dir}.partial" \
    -r requirements/uv.txt
  rm -rf "${dir}" && mv "${dir}.partial" "${dir}"
fi
echo "${dir}/bin/uv"
