# syntax=docker/dockerfile:1
# Three images from one file (public bases by default; tools/images.sh passes local ones):
#   docker build --target operator   -t olivekube/operator:0.1.0 .    (slim: kopf, kubernetes, boto3; no torch)
#   docker build --target runner     -t olivekube/runner:0.1.0 .      (CUDA, torch, transformers, peft, onnxruntime-genai)
#   docker build --target runner-cpu -t olivekube/runner-cpu:0.1.0 .  (the same passes on CPU nodes)
ARG PYTHON_BASE=python:3.11.9-slim-bookworm
ARG CUDA_BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# The package and a non-root user, in a virtualenv at /opt/venv (Debian's python3 refuses system-wide pip).
FROM ${PYTHON_BASE} AS python
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH HF_HOME=/tmp/hf
RUN python3 -m venv /opt/venv \
    && useradd --uid 65532 --user-group --create-home --shell /usr/sbin/nologin olivekube
WORKDIR /app
COPY pyproject.toml tools/pyproject_requirements.py ./

# The runners install their pinned dependencies first, in a layer that only pyproject.toml changes, and
# the package itself last (--no-deps): a change to olivekube's sources rebuilds a layer of kilobytes,
# not the gigabytes of torch, so a warm build is fast and the build cache holds the dependencies once.
# The operator image is small (its install takes ~25 s): one layer, installed from the build context
# mounted for that step only, so no layer holds a second copy of the sources (it must stay <= 250 MB).
FROM python AS operator
# A private CA for PyPI behind a TLS-inspecting proxy (tools/images.sh mounts the host's): build-time only.
ARG PIP_CERT
RUN --mount=type=bind,source=.,target=/src,rw \
    pip install --no-cache-dir /src && pip uninstall -y pip setuptools && rm -rf /app
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["olivekube"]
CMD ["operator"]

FROM python AS runner-cpu-deps
ARG PIP_CERT
RUN python3 pyproject_requirements.py runner azure >requirements.txt \
    && pip install --no-cache-dir -r requirements.txt

FROM runner-cpu-deps AS runner-cpu
ARG PIP_CERT
COPY README.md ./
COPY olivekube ./olivekube
RUN pip install --no-cache-dir --no-deps . && rm -rf /app
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["olivekube"]
CMD ["--help"]

FROM ${CUDA_BASE} AS runner
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH HF_HOME=/tmp/hf
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12=3.12.* python3.12-venv=3.12.* \
    && rm -rf /var/lib/apt/lists/* \
    && python3.12 -m venv /opt/venv \
    && useradd --uid 65532 --user-group --create-home --shell /usr/sbin/nologin olivekube
WORKDIR /app
COPY pyproject.toml tools/pyproject_requirements.py ./
ARG PIP_CERT
# onnxruntime-genai-cuda replaces the CPU build of the runner extra on GPU nodes.
RUN python3 pyproject_requirements.py runner azure >requirements.txt \
    && pip install --no-cache-dir -r requirements.txt \
    && pip uninstall -y onnxruntime onnxruntime-genai \
    && pip install --no-cache-dir onnxruntime-gpu==1.31.1 onnxruntime-genai-cuda==0.18.0
COPY README.md ./
COPY olivekube ./olivekube
RUN pip install --no-cache-dir --no-deps . && rm -rf /app
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["olivekube"]
CMD ["--help"]
