#!/bin/sh
# For the Dockerfile: run a shell command with the lock's uv on PATH. pip installs uv with the hashes of
# requirements/uv.txt into a scratch folder that is removed afterwards, so no image layer keeps it.
# CA_BUNDLE (optional) is a CA file for a PyPI reached through a TLS-inspecting proxy; UV_CACHE_DIR
# (optional) a download cache mounted into the build (without it uv keeps no cache in the image).
set -eu
here=$(dirname "$0")
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
if [ -n "${CA_BUNDLE:-}" ]; then export SSL_CERT_FILE="$CA_BUNDLE" PIP_CERT="$CA_BUNDLE"; fi
[ -n "${UV_CACHE_DIR:-}" ] || export UV_NO_CACHE=1
export UV_PYTHON_DOWNLOADS=never UV_LINK_MODE=copy TMPDIR="$scratch"
python3 -m venv "$scratch"
"$scratch/bin/pip" install -q --disable-pip-version-check --no-cache-dir --no-deps --require-hashes -r "$here/uv.txt"
PATH="$scratch/bin:$PATH" sh -c "$1"
