"""Each process loads only its own floor, checked on the real entry points: the command a
container runs is started, and the modules it imported by the time it is ready are read from the
interpreter's own import log (``python -X importtime``)."""

from __future__ import annotations

import pytest

from tests.process_probe import start

# What each process must never load: the gateway decodes no images and runs no model; the worker
# has no web framework and no database; the aggregator neither models nor web framework. PDF
# rendering (matplotlib) and training (torch) load only when a PDF or a training run is asked for.
FORBIDDEN = {
    "gateway": ("cv2", "onnxruntime", "matplotlib", "torch", "worker", "training"),
    "worker": (
        "fastapi",
        "starlette",
        "uvicorn",
        "jinja2",
        "sqlalchemy",
        "psycopg",
        "alembic",
        "matplotlib",
        "torch",
        "app",
        "training",
    ),
    "aggregator": (
        "cv2",
        "onnxruntime",
        "fastapi",
        "starlette",
        "uvicorn",
        "matplotlib",
        "torch",
        "app",
        "training",
    ),
}


@pytest.mark.parametrize("command", sorted(FORBIDDEN))
def test_process_loads_only_its_own_floor(command, database_url, redis_url, clean_redis):
    started = start(command, database_url, redis_url)
    loaded = sorted(m for m in FORBIDDEN[command] if started.loaded(m))
    assert not loaded, f"classpulse {command} loaded {loaded}"
    # The probe sees imports at all: each process loads its own package.
    assert started.loaded({"gateway": "app", "worker": "worker", "aggregator": "worker"}[command])
