#!/usr/bin/env bash
# Build the operator, CPU runner and GPU runner images from the Dockerfile with buildah, with no registry: the
# Python base is made here from Debian packages (mmdebstrap) and imported. Every Python package comes
# from uv.lock (requirements/*.txt, hashes checked), downloaded through uv's cache on this machine
# (~/.cache/uv, mounted into the build), so images built from one lock hold the same packages on any day.
# Images live in podman's storage under ~/.cache/olivekube/containers (CONTAINERS_STORAGE_CONF), tagged
# by a digest of the Dockerfile, the lock and the package's sources, so a warm run only finds them
# (seconds) and a changed lock rebuilds them.
# Prints the three image references as its last three lines: operator, runner-cpu, runner (GPU).
#   OLIVEKUBE_IMAGES_TIMES=FILE  also appends "name seconds" per built part (for benchmarks/images.py)
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

CACHE="${HOME}/.cache/olivekube/containers"
export CONTAINERS_STORAGE_CONF="${CACHE}/storage.conf"
TIMES="${OLIVEKUBE_IMAGES_TIMES:-/dev/null}"
BASE_PACKAGES="python3,python3-venv,passwd,ca-certificates,libstdc++6"
SUITE=bookworm

need() { command -v "$1" >/dev/null; }
if ! need podman || ! need buildah || ! need mmdebstrap || ! need runc; then
  echo "[images] installing podman, buildah, mmdebstrap and runc from Debian" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah mmdebstrap runc >/dev/null
fi
mkdir -p "${CACHE}"
if [[ ! -f "${CONTAINERS_STORAGE_CONF}" ]]; then
  printf '[storage]\ndriver = "overlay"\ngraphroot = "%s"\nrunroot = "/run/olivekube-containers"\n' \
    "${CACHE}/storage" >"${CONTAINERS_STORAGE_CONF}"
fi
# For a plain `podman run` of these images (README): runc, and limits a process here may set (podman's
# defaults raise RLIMIT_NOFILE, which a container started without CAP_SYS_RESOURCE may not).
if [[ ! -f "${CACHE}/containers.conf" ]]; then
  printf '[containers]\ndefault_ulimits = ["nofile=8192:8192", "nproc=4096:4096"]\n[engine]\nruntime = "runc"\n' \
    >"${CACHE}/containers.conf"
fi

timed() {  # NAME COMMAND...: run it, and note how long it took
  local name="$1" began
  shift
  began=$(date +%s.%N)
  "$@"
  echo "${name} $(echo "$(date +%s.%N) - ${began}" | bc)" >>"${TIMES}"
}

have() { podman image exists "$1"; }

base_key=$(echo "${SUITE} ${BASE_PACKAGES} essential merged-usr slim" | sha256sum | cut -c1-12)
base="localhost/olivekube-base:${base_key}"
if ! have "${base}"; then
  echo "[images] making the Python base from Debian ${SUITE} (${BASE_PACKAGES})" >&2
  tar="$(mktemp -d)/base.tar"
  # essential (no apt), merged /usr without the usrmerge package (which pulls perl), no docs or locales
  timed base mmdebstrap --quiet --variant=essential --include="${BASE_PACKAGES}" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*' \
    "${SUITE}" "${tar}"
  podman import -q "${tar}" "${base}" >/dev/null
  rm -rf "$(dirname "${tar}")"
fi

# Keys: the runners' dependency layers (the runner-cpu-deps and runner-deps targets) change with the
# Dockerfile and the lock's exports they install only; the final images change with the package's sources
# too, and add a layer of kilobytes on a warm deps image.
deps_key=$( (echo "${base}"; cat Dockerfile requirements/uv.txt requirements/runner-cpu.txt) | sha256sum | cut -c1-12)
gpu_deps_key=$( (echo "${deps_key}"; cat requirements/runner-cuda.txt) | sha256sum | cut -c1-12)
key=$( (echo "${gpu_deps_key}"; cat requirements/operator.txt pyproject.toml README.md
  find olivekube -name '*.py' -print0 | sort -z | xargs -0 cat) | sha256sum | cut -c1-12)
operator="localhost/olivekube/operator:${key}"
runner="localhost/olivekube/runner-cpu:${key}"
gpu_runner="localhost/olivekube/runner:${key}"
keep=("${base}" "${operator}" "${runner}" "${gpu_runner}" "localhost/olivekube/runner-cpu-deps:${deps_key}"
  "localhost/olivekube/runner-deps:${gpu_deps_key}")
# Images of other keys go before anything is built, so the disk holds one runner's dependencies (about
# 7 GB) while the next is built, not two: the tagged deps image of the current key survives the removal.
stale=$(podman images --format '{{.Repository}}:{{.Tag}}' | grep -E '^localhost/olivekube(/|-base:)' \
  | grep -v -x "${keep[@]/#/-e}" || true)
if [[ -n "${stale}" ]]; then
  echo "[images] removing images of other sources: $(echo "${stale}" | tr '\n' ' ')" >&2
  echo "${stale}" | xargs -r podman rmi -f >/dev/null 2>&1 || true
fi
podman image prune -f >/dev/null 2>&1 || true

mounts=()  # the host's CA bundle, for a PyPI reached through a TLS-inspecting proxy
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
  mounts=(--volume /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro --build-arg CA_BUNDLE=/run/host-ca.crt)
fi
# uv's download cache (tools/setup.sh filled it with the same wheels), so a build downloads nothing twice
uv_cache="${UV_CACHE_DIR:-${HOME}/.cache/uv}"
mkdir -p "${uv_cache}"
mounts+=(--volume "${uv_cache}:/uv-cache" --build-arg UV_CACHE_DIR=/uv-cache)
build() {  # TARGET REF: build one target of the Dockerfile as REF unless that image is there already
  if ! have "$2"; then
    echo "[images] building $1" >&2
    timed "$1" buildah bud --quiet --layers --runtime runc --network host \
      --ulimit nofile=8192:8192 --ulimit nproc=4096:4096 "${mounts[@]}" \
      --build-arg "PYTHON_BASE=${base}" --target "$1" --tag "$2" . >/dev/null
  fi
}
build operator "${operator}"
build runner-cpu-deps "localhost/olivekube/runner-cpu-deps:${deps_key}"
build runner-cpu "${runner}"
build runner-deps "localhost/olivekube/runner-deps:${gpu_deps_key}"
build runner "${gpu_runner}"
echo "[images] to run them: export CONTAINERS_STORAGE_CONF=${CONTAINERS_STORAGE_CONF} CONTAINERS_CONF=${CACHE}/containers.conf" >&2
echo "${operator}"
echo "${runner}"
echo "${gpu_runner}"
