# syntax=docker/dockerfile:1
# ClassPulse image: gateway, worker and aggregator are the same image with another command.
#
#   CPU (default):  docker build -t classpulse .
#   GPU (CUDA):     docker build -t classpulse:gpu \
#                     --build-arg BASE_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 \
#                     --build-arg ONNXRUNTIME=onnxruntime-gpu .
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG ONNXRUNTIME=onnxruntime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

# The CUDA base images have no Python; the python:* images already do. OpenCV headless needs
# libglib at run time on slim images.
RUN set -eux; \
    apt-get update; \
    if ! command -v python3 >/dev/null; then \
      apt-get install -y --no-install-recommends python3 python3-venv; \
    fi; \
    apt-get install -y --no-install-recommends libglib2.0-0 tini; \
    rm -rf /var/lib/apt/lists/*; \
    python3 -m venv /opt/venv; \
    useradd --system --create-home --home-dir /home/classpulse classpulse

WORKDIR /srv/classpulse
COPY pyproject.toml README.md alembic.ini ./
COPY classpulse ./classpulse
COPY app ./app
COPY worker ./worker
COPY records ./records
COPY training ./training
COPY migrations ./migrations
COPY web ./web
COPY models ./models
RUN set -eux; \
    pip install .; \
    if [ "$ONNXRUNTIME" != "onnxruntime" ]; then \
      pip uninstall -y onnxruntime; \
      pip install "$ONNXRUNTIME"; \
    fi; \
    python -c "import onnxruntime as ort; print('onnxruntime providers:', ort.get_available_providers())"

USER classpulse
ENV CLASSPULSE_ENV=production \
    CLASSPULSE_HOST=0.0.0.0 \
    CLASSPULSE_PORT=8000 \
    CLASSPULSE_MODELS_DIR=/srv/classpulse/models
EXPOSE 8000
ENTRYPOINT ["tini", "--", "classpulse"]
CMD ["gateway"]
