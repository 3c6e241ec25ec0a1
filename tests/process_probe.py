"""Start a service process as deployed; measure how long it takes to be ready, its memory, and
which modules it loaded. Used by tests/test_process_boundaries.py and bench/bench_process_start.py.

Each command runs as ``python -X importtime -m classpulse COMMAND`` (what the container runs,
plus the interpreter's import log on stderr) against a fresh database on the local PostgreSQL
and Redis database 15. Ready means: the gateway answers /healthz; a worker or the aggregator has
written its heartbeat key. RSS is read once the process is ready (and idle).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg
import redis

from classpulse import contracts
from classpulse.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent

ADMIN_URL = os.environ.get(
    "CLASSPULSE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("CLASSPULSE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
# Libraries worth knowing about: what each process should (not) carry.
WATCH = (
    "cv2",
    "onnxruntime",
    "numpy",
    "fastapi",
    "starlette",
    "uvicorn",
    "jinja2",
    "sqlalchemy",
    "sqlalchemy.orm",
    "psycopg",
    "alembic",
    "matplotlib",
    "torch",
    "training",
    "app",
    "worker",
    "aggregator",
)
_IMPORT_LINE = re.compile(r"^import time:\s+\d+\s+\|\s+\d+\s+\|(\s*)(\S+)\s*$")


@dataclass
class Started:
    command: str
    ready_s: float
    rss_mb: float
    modules: frozenset[str]  # every module the process imported before it was ready

    def loaded(self, name: str) -> bool:
        return name in self.modules


@contextmanager
def fresh_database() -> Iterator[str]:
    name = f"cp_start_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(command: str, port: int, r: redis.Redis, before: set[bytes]) -> bool:
    if command == "gateway":
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=0.5) as resp:
                return resp.status == 200
        except OSError:
            return False
    prefix = (
        contracts.WORKER_HEARTBEAT_PREFIX
        if command == "worker"
        else contracts.AGGREGATOR_HEARTBEAT_PREFIX
    )
    return bool(set(r.keys(prefix + "*")) - before)


def start(
    command: str, database_url: str, redis_url: str = REDIS_URL, timeout: float = 60.0
) -> Started:
    """Run ``classpulse COMMAND`` until it is ready; return what it cost; stop it."""
    port = _free_port()
    env = {
        **os.environ,
        "CLASSPULSE_ENV": "development",
        "CLASSPULSE_DATABASE_URL": database_url,
        "CLASSPULSE_REDIS_URL": redis_url,
        "CLASSPULSE_PORT": str(port),
        "CLASSPULSE_SECRET_KEY": "bench-secret-key-of-sufficient-length-0123",
        "CLASSPULSE_LOG_LEVEL": "WARNING",
    }
    r = redis.Redis.from_url(redis_url)
    before = set(r.keys("cp:worker:*")) | set(r.keys("cp:aggregator:*"))
    # The import log goes to a file: a pipe nobody reads while waiting would fill and block it.
    with tempfile.TemporaryFile("w+") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "classpulse", command],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )
        try:
            while not _ready(command, port, r, before):
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"classpulse {command} exited early:\n{log.read()[-3000:]}")
                if time.perf_counter() - t0 > timeout:
                    raise RuntimeError(f"classpulse {command} not ready after {timeout:.0f} s")
                time.sleep(0.02)
            ready_s = time.perf_counter() - t0
            time.sleep(0.5)  # settle: the first request / heartbeat may still be allocating
            rss = psutil.Process(proc.pid).memory_info().rss / 2**20
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            r.close()
        log.seek(0)
        err = log.read()
    modules = frozenset(m.group(2) for line in err.splitlines() if (m := _IMPORT_LINE.match(line)))
    return Started(command, ready_s, rss, modules)
