# syntax=docker/dockerfile:1
# Two images from one file:
#   docker build --target operator -t olivekube/operator:0.1.0 .   (slim: kopf, kubernetes, boto3; no torch)
#   docker build --target runner   -t olivekube/runner:0.1.0 .     (CUDA, torch, transformers, peft, onnxruntime-genai)

FROM python:3.11.9-slim-bookworm AS operator
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY olivekube ./olivekube
RUN pip install --no-cache-dir . \
    && useradd --uid 65532 --create-home --shell /usr/sbin/nologin olivekube
USER 65532:65532
ENTRYPOINT ["olivekube"]
CMD ["operator"]

FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS runner
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH HF_HOME=/tmp/hf
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12=3.12.* python3.12-venv=3.12.* \
    && rm -rf /var/lib/apt/lists/* \
    && python3.12 -m venv /opt/venv \
    && useradd --uid 65532 --create-home --shell /usr/sbin/nologin olivekube
WORKDIR /app
COPY pyproject.toml README.md ./
COPY olivekube ./olivekube
# onnxruntime-genai-cuda replaces the CPU build of the runner extra on GPU nodes. The extra's versions
# are pinned in pyproject.toml, which hadolint cannot see.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[runner,azure]" \
    && pip uninstall -y onnxruntime onnxruntime-genai \
    && pip install --no-cache-dir onnxruntime-gpu==1.31.1 onnxruntime-genai-cuda==0.18.0
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["olivekube"]
CMD ["--help"]
