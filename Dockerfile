# DARS Router service image. CPU by default; on a host with the NVIDIA container toolkit,
# `docker run --gpus all` lets the embedding (torch) and scoring (onnxruntime-gpu) use the GPU.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    DARS_HOST=0.0.0.0 \
    DARS_PORT=8000

WORKDIR /srv/dars
# torch first and pinned, so that sentence-transformers does not pick another build.
# Pass --build-arg TORCH_SPEC="torch==2.13.0 --index-url <your CPU/CUDA wheel index>" to choose.
ARG TORCH_SPEC="torch==2.13.0"
RUN pip install ${TORCH_SPEC}

COPY pyproject.toml README.md ./
COPY app ./app
COPY router_models ./router_models
RUN pip install . && useradd --create-home --uid 10001 dars
USER dars

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz').status != 200)"
CMD ["dars-router", "serve"]
