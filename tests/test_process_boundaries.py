"""Each process loads only its own floor, checked on the real entry points: the command a
container runs is started, and the modules it imported by the time it is ready are read from the
interpreter's own import log (``python -X importtime``)."""

from __future__ import annotations

import pytest

from tests.process_probe import start

# What each process must never load: the gateway decodes no images and runs no model; the worker
# has no web framework and no database; the aggregator neither models nor web framework; none
# loads another process's package. PDF rendering (matplotlib) and training (torch) load only when
# a PDF or a training run is asked for.
FORBIDDEN = {
    "gateway": ("cv2", "onnxruntime", "matplotlib", "torch", "worker", "aggregator", "training"),
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
        "aggregator",
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
        "worker",
        "training",
    ),
}


@pytest.mark.parametrize("command", sorted(FORBIDDEN))
def test_process_loads_only_its_own_floor(command, database_url, redis_url, clean_redis):
    started = start(command, database_url, redis_url)
    loaded = sorted(m for m in FORBIDDEN[command] if started.loaded(m))
    assert not loaded, f"classpulse {command} loaded {loaded}"
    # The probe sees imports at all: each process loads its own package; the worker and the
    # aggregator run the one consumer loop.
    assert started.loaded("classpulse.consumer") == (command != "gateway")
    assert started.loaded(
        {"gateway": "app", "worker": "worker", "aggregator": "aggregator"}[command]
    )
