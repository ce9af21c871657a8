# syntax=docker/dockerfile:1
# Three images from one file, each installing only what uv.lock pins (requirements/*.txt, hashes checked):
#   docker build --target operator   -t olivekube/operator:0.1.0 .    (slim: kopf, kubernetes, boto3; no torch)
#   docker build --target runner-cpu -t olivekube/runner-cpu:0.1.0 .  (torch, transformers, peft, onnxruntime-genai)
#   docker build --target runner     -t olivekube/runner:0.1.0 .      (the same with onnxruntime's CUDA builds;
#                                                                       the CUDA libraries come from PyPI's wheels)
# PYTHON_BASE is any Linux base with Python 3.11 and python3 -m venv (tools/images.sh passes a Debian one
# made locally; an nvidia/cuda base with Python 3.11 works for the runner too).
ARG PYTHON_BASE=python:3.11.9-slim-bookworm

FROM ${PYTHON_BASE} AS python
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH HF_HOME=/tmp/hf
RUN useradd --uid 65532 --user-group --create-home --shell /usr/sbin/nologin olivekube

# The operator: one layer holding the venv, made from the build context mounted for that step only (so no
# layer holds a second copy of the sources), with neither pip nor uv (it must stay <= 225 MB).
# requirements/with-uv.sh puts the lock's uv (hash-checked) on PATH for one step and removes it after.
# botocore carries the API models of every AWS service (29 MB); the operator keeps S3's and those of the
# services botocore's credential providers call (STS for web identity and roles, SSO, SSO OIDC, sign-in).
FROM python AS operator
ARG CA_BUNDLE
RUN --mount=type=bind,source=.,target=/src,rw sh /src/requirements/with-uv.sh '\
    uv venv -q /opt/venv --python python3 \
    && uv pip sync -q --compile-bytecode --require-hashes /src/requirements/operator.txt \
    && uv pip install -q --compile-bytecode --no-deps /src \
    && find "$(/opt/venv/bin/python -c "import botocore, os; print(os.path.dirname(botocore.__file__))")/data" \
       -mindepth 1 -maxdepth 1 -type d ! -name s3 ! -name sts ! -name sso ! -name sso-oidc ! -name signin \
       -exec rm -rf {} +'
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["olivekube"]
CMD ["operator"]

# The runners install their locked dependencies first, in a layer that only the lock changes, and the
# package itself last (--no-deps): a change to olivekube's sources rebuilds a layer of kilobytes, not the
# gigabytes of torch. UV_CACHE_DIR (a build argument) may name a download cache mounted into the build.
FROM python AS runner-cpu-deps
ARG CA_BUNDLE UV_CACHE_DIR
RUN --mount=type=bind,source=requirements,target=/requirements sh /requirements/with-uv.sh '\
    uv venv -q /opt/venv --python python3 \
    && uv pip sync -q --compile-bytecode --require-hashes /requirements/runner-cpu.txt'

FROM runner-cpu-deps AS runner-cpu
ARG CA_BUNDLE
RUN --mount=type=bind,source=.,target=/src,rw sh /src/requirements/with-uv.sh \
    'uv pip install -q --compile-bytecode --no-deps /src'
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["olivekube"]
CMD ["--help"]

# The GPU runner: the CPU runner's dependency layer (torch from PyPI carries the CUDA 13 libraries as nvidia-*
# wheels already) with onnxruntime's CUDA builds in place of its CPU builds and the cuRAND they link: a
# layer of some hundreds of MB on top of the CPU runner's, which a node holding both pulls once. The CUDA
# providers find those libraries through LD_LIBRARY_PATH (torch finds them through its own RPATH); the
# driver's libcuda.so.1 comes from the node. `olivekube doctor` checks that every library resolves.
FROM runner-cpu-deps AS runner-deps
ARG CA_BUNDLE UV_CACHE_DIR
RUN --mount=type=bind,source=requirements,target=/requirements sh /requirements/with-uv.sh '\
    uv pip sync -q --compile-bytecode --require-hashes /requirements/runner-cuda.txt'
ENV LD_LIBRARY_PATH=/opt/venv/lib/python3.11/site-packages/nvidia/cu13/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cudnn/lib

FROM runner-deps AS runner
ARG CA_BUNDLE
RUN --mount=type=bind,source=.,target=/src,rw sh /src/requirements/with-uv.sh \
    'uv pip install -q --compile-bytecode --no-deps /src'
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["olivekube"]
CMD ["--help"]
