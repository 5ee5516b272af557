# ganops for GPU runners: CUDA runtime, the package with a CUDA build of torch, Fashion-MNIST from the
# distribution's package; runs `dvc repro` as a non-root user. The MLflow store and the DVC cache are
# volumes, so models, runs and cached stage outputs outlive the container (see README, "GPU").
#   docker build -t ganops .
#   docker run --gpus all -v ganops-mlflow:/mlflow -v ganops-dvc:/dvc-cache ganops
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    GX_ANALYTICS_ENABLED=false \
    DVC_NO_ANALYTICS=1 \
    MLFLOW_DISABLE_TELEMETRY=true

# Unpinned on purpose: the distribution's security updates should land on rebuild.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv git dataset-fashion-mnist \
    && rm -rf /var/lib/apt/lists/*

# uid 1000 is taken by the base image's "ubuntu" user
RUN useradd --create-home --uid 10001 ganops \
    && mkdir -p /mlflow /dvc-cache \
    && chown ganops:ganops /mlflow /dvc-cache
USER 10001
WORKDIR /home/ganops/app
ENV VIRTUAL_ENV=/home/ganops/venv
ENV PATH=$VIRTUAL_ENV/bin:$PATH

# torch first, in its own layer: PyPI's Linux wheel of torch 2.14.1 is the CUDA build (several GB)
RUN python3 -m venv "$VIRTUAL_ENV" \
    && pip install torch==2.14.1 torchvision==0.29.1
COPY --chown=ganops:ganops . .
# hadolint ignore=DL3013
RUN pip install -e . \
    && dvc config --local cache.dir /dvc-cache \
    && git config --global --add safe.directory /home/ganops/app

ENV MLFLOW_TRACKING_URI=sqlite:////mlflow/mlflow.db
VOLUME ["/mlflow", "/dvc-cache"]
CMD ["dvc", "repro"]
