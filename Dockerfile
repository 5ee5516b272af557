# ganops for GPU machines: the environment (CUDA runtime, Python, torch's CUDA build, DVC, MLflow, the dataset),
# not the workspace. Your clone is mounted at /work, so dvc.lock, metrics/, models and the DVC cache are written
# into it and outlive the container (push them with `dvc push` / `git push` as from any clone); the MLflow store
# and its artifacts share the volume /mlflow. No secret is copied in: credentials come as -e variables at run time.
#   docker build -t ganops .
#   docker run --gpus all --user "$(id -u):$(id -g)" -v "$PWD:/work" -v ganops-mlflow:/mlflow ganops
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

# torch first, in its own layer: PyPI's Linux wheel of torch 2.14.1 is the CUDA build (several GB)
ENV VIRTUAL_ENV=/opt/venv
ENV PATH=$VIRTUAL_ENV/bin:$PATH
RUN python3 -m venv "$VIRTUAL_ENV" \
    && pip install torch==2.14.1 torchvision==0.29.1
# The package's dependencies (and a fallback copy of the package); the mounted clone's own code comes first on
# PYTHONPATH, so the stages run the commit dvc.lock records.
COPY pyproject.toml README.md /opt/ganops/
COPY src /opt/ganops/src
COPY pipelines /opt/ganops/pipelines
# hadolint ignore=DL3013
RUN pip install /opt/ganops \
    && git config --system --add safe.directory /work

# uid 1000 is taken by the base image's "ubuntu" user; `--user $(id -u)` runs as the clone's owner instead.
# /mlflow is writable by any uid (sticky, like /tmp) so either works.
RUN useradd --create-home --uid 10001 ganops \
    && mkdir -p /mlflow /work \
    && chmod 1777 /mlflow \
    && chown ganops:ganops /work
USER 10001
WORKDIR /work
# HOME for any uid (caches); the tracking outbox (calls kept while the store is down) on the volume.
# The store and its artifacts (mlartifacts/ beside mlflow.db) live on the volume; the tests hold these paths
# to the store's defaults (tests/test_team_settings.py).
ENV HOME=/tmp \
    PYTHONPATH=/work/src:/work \
    MLFLOW_TRACKING_URI=sqlite:////mlflow/mlflow.db \
    GANOPS_OUTBOX=/mlflow/outbox
VOLUME ["/mlflow"]
CMD ["dvc", "repro"]
