# syntax=docker/dockerfile:1
# ClassPulse image: gateway, worker and aggregator are the same image with another command.
#
#   CPU (default):  docker build -t classpulse .
#   GPU (CUDA):     docker build -t classpulse:gpu \
#                     --build-arg BASE_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 \
#                     --build-arg ONNXRUNTIME=onnxruntime-gpu .
#
# Two stages: the builder installs the locked dependencies (requirements/*.lock, every file
# checked against its sha256; scripts/lock makes them) into /opt/venv; the runtime stage gets
# that venv and the application, and no pip, compiler, package lists or caches.
# The CPU image installs requirements/runtime.lock (Python 3.11); the GPU image
# requirements/gpu.lock, the same set with onnxruntime-gpu instead of onnxruntime, locked for
# the CUDA base image's Python (3.12 on Ubuntu 24.04).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS builder
ARG ONNXRUNTIME=onnxruntime
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The CUDA base images have no Python; the python:* images already do.
RUN set -eux; \
    if ! command -v python3 >/dev/null; then \
      apt-get update; \
      apt-get install -y --no-install-recommends python3 python3-venv; \
      rm -rf /var/lib/apt/lists/*; \
    fi; \
    python3 -m venv /opt/venv
COPY requirements/runtime.lock requirements/gpu.lock /tmp/requirements/
# --only-binary: every locked package has a wheel, so no compiler is needed (or installed).
RUN set -eux; \
    case "$ONNXRUNTIME" in \
      onnxruntime) lock=/tmp/requirements/runtime.lock ;; \
      onnxruntime-gpu) lock=/tmp/requirements/gpu.lock ;; \
      *) echo "ONNXRUNTIME must be onnxruntime or onnxruntime-gpu" >&2; exit 1 ;; \
    esac; \
    /opt/venv/bin/pip install --require-hashes --only-binary :all: -r "$lock"; \
    /opt/venv/bin/python -c "import onnxruntime as ort; print('onnxruntime providers:', ort.get_available_providers())"; \
    /opt/venv/bin/pip uninstall -y pip
WORKDIR /srv/classpulse
COPY pyproject.toml README.md alembic.ini ./
COPY classpulse ./classpulse
COPY app ./app
COPY worker ./worker
COPY aggregator ./aggregator
COPY records ./records
COPY training ./training
COPY migrations ./migrations
COPY web ./web
COPY models ./models
# The application runs from this tree (PYTHONPATH below), not from site-packages: templates,
# static files, models and migrations are found next to the code (classpulse.settings.REPO_ROOT).
# Bytecode compiled here, since the root filesystem is read-only at run time.
RUN /opt/venv/bin/python -m compileall -q classpulse app worker aggregator records training migrations

FROM ${BASE_IMAGE} AS runtime
# The interpreter the venv was made with (same base image, same path); OpenCV headless needs
# libglib at run time on slim images; tini reaps children and forwards signals.
RUN set -eux; \
    apt-get update; \
    if ! command -v python3 >/dev/null; then \
      apt-get install -y --no-install-recommends python3; \
    fi; \
    apt-get install -y --no-install-recommends libglib2.0-0 tini; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*; \
    groupadd --system --gid 10001 classpulse; \
    useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/classpulse classpulse
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /srv/classpulse /srv/classpulse
# `classpulse …` on the PATH like a console script (kubectl exec … -- classpulse create-admin).
RUN set -eux; \
    printf '#!/bin/sh\nexec python -m classpulse "$@"\n' > /opt/venv/bin/classpulse; \
    chmod 0755 /opt/venv/bin/classpulse
WORKDIR /srv/classpulse
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/srv/classpulse \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CLASSPULSE_ENV=production \
    CLASSPULSE_HOST=0.0.0.0 \
    CLASSPULSE_PORT=8000 \
    CLASSPULSE_MODELS_DIR=/srv/classpulse/models \
    MPLCONFIGDIR=/tmp/matplotlib
# Numeric, so Kubernetes' runAsNonRoot can check it (deploy/k8s runs it as 10001 too).
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["tini", "--", "classpulse"]
CMD ["gateway"]
