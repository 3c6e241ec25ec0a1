"""Shared fixtures: the real PostgreSQL and Redis on 127.0.0.1, and the committed ONNX models.

Tests never skip when the servers are missing: they fail with a message saying what to start.
Each test run gets its own database (created from the `test` database, dropped at the end) and
its own Redis logical database, so runs on one machine don't trample each other.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from classpulse.accounts import create_user
from classpulse.db import ClassSession, Student, make_engine
from classpulse.settings import REPO_ROOT, Settings

ADMIN_URL = os.environ.get(
    "CLASSPULSE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_BASE = os.environ.get("CLASSPULSE_TEST_REDIS_URL", "redis://127.0.0.1:6379")
MODELS = REPO_ROOT / "models"

# The fast tier (`scripts/test --fast`, i.e. `pytest -m "not slow"`) leaves out what is slow by
# nature, listed here with the reason instead of a marker in each file: a module, or one test of
# a module ("module::test", every parameter of it). A test marked `browser` (Chromium) is slow
# too, and so is one marked `slow` in its own module (a fuzzing run, a class of 40 arriving).
# The full suite (`scripts/test`, CI) runs everything. Measured: tests/test_*.py one module at
# a time with --durations, then the fast tier as a whole (README, "Tests in parts").
SLOW = {
    "test_backpressure": "waits for the gateway's rate control to slow a page and speed it up",
    "test_caddy_proxy": "the real Caddy in front of a running service, Chromium through it",
    "test_class_arrival": "40 students arriving at once against the whole service",
    "test_cli_accounts": "the classpulse command as a process",
    "test_embedded": "starts the embedded PostgreSQL and Redis servers",
    "test_faults": "kills and restarts workers, the aggregator, Redis and PostgreSQL",
    "test_gateway_redis_restart": "restarts a private Redis under a running gateway",
    "test_k8s_manifests": "kubectl over both overlays; probes and migrations as real processes",
    "test_multi_gateway": "two gateways, workers and aggregators as processes, one killed",
    "test_process_boundaries": "starts each service as the container does",
    "test_scale": "many students and processes at once",
    "test_school_limits": "a school's worth of joins and logins from one address (600, 1,000)",
    "test_static_streams": "stalled readers held until their deadlines, the gateway's memory",
    "test_stream_shards": "workers and an aggregator running their loops over several shards",
    "test_training": "trains networks with torch",
    # Walks of the whole app (20 s and 16 s here); the table checks beside them stay fast.
    "test_access_matrix::test_access_matrix": "every route and socket as each of six callers",
    "test_redaction::test_no_route_or_live_message_shows_a_student_estimate_outside_per_student": (
        "every route and socket as each reader under each policy mode"
    ),
}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = getattr(item, "module", None)
        name = module.__name__.rsplit(".", 1)[-1] if module else ""
        test = getattr(item, "originalname", item.name)
        if name in SLOW or f"{name}::{test}" in SLOW or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh, migrated database for this test run."""
    from classpulse.migrate import upgrade

    name = f"cp_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {ADMIN_URL}: {exc}", pytrace=False)
    admin.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        upgrade(url)
        yield url
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def redis_url() -> str:
    # 1..14: database 15 is the benchmarks' (bench/bench_worker.py flushes it).
    db = 1 + os.getpid() % 14
    url = f"{REDIS_BASE}/{db}"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=5).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_BASE}: {exc}", pytrace=False)
    return url


@pytest.fixture
def clean_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


# What every test starts without: these tables and every table referencing them, as
# ``TRUNCATE ... CASCADE`` would empty them.
CLEAN_TABLES = ("users", "class_sessions", "students", "emotion_buckets", "applied_results")
# How to empty them, worked out once per run from the catalogue: (table, truncate), referencing
# tables first.
_CLEANUP: list[tuple[str, bool]] = []


def _cleanup_plan(conn: psycopg.Connection) -> list[tuple[str, bool]]:
    """CLEAN_TABLES and every table whose foreign keys reach them (recursively), each after the
    tables that reference it, and whether to TRUNCATE it (a partitioned table nothing references:
    its rows go without dead tuples, so the planner sees each test's tables as the last one
    left them) or DELETE from it (a few rows: no new files for the table and its indexes)."""
    edges = conn.execute(
        """SELECT DISTINCT c.conrelid::regclass::text, c.confrelid::regclass::text
           FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid
           WHERE c.contype = 'f' AND NOT r.relispartition"""
    ).fetchall()
    partitioned = {
        r[0] for r in conn.execute("SELECT oid::regclass::text FROM pg_class WHERE relkind = 'p'")
    }
    referencing: dict[str, set[str]] = {}
    for child, parent in edges:
        referencing.setdefault(parent, set()).add(child)
    reached, todo = set(), list(CLEAN_TABLES)
    while todo:
        table = todo.pop()
        if table not in reached:
            reached.add(table)
            todo += referencing.get(table, ())
    order: list[str] = []
    while len(order) < len(reached):
        ready = sorted(
            t
            for t in reached - set(order)
            if referencing.get(t, set()) & reached <= set(order) | {t}
        )
        assert ready, f"foreign keys in a cycle among {sorted(reached - set(order))}"
        order += ready
    return [(t, t in partitioned and not referencing.get(t)) for t in order]


@pytest.fixture
def clean_db(database_url: str) -> Iterator[str]:
    """The test database with every row removed after the test. Not one ``TRUNCATE ...
    CASCADE``: that makes new files for every daily partition of the bucket tables, 0.3-0.7 s
    a test, minutes across the suite. The bucket tables are truncated only when a test wrote to
    them; the other tables hold a few rows, deleted."""
    yield database_url
    with psycopg.connect(database_url, autocommit=True) as conn:
        if not _CLEANUP:
            _CLEANUP.extend(_cleanup_plan(conn))
        with conn.transaction():
            for table, truncate in _CLEANUP:  # names from the catalogue
                if not truncate:
                    conn.execute(f"DELETE FROM {table}")
                elif conn.execute(f"SELECT EXISTS (SELECT FROM {table})").fetchone()[0]:
                    conn.execute(f"TRUNCATE {table}")


@pytest.fixture
def settings(clean_db: str, clean_redis: redis.Redis, redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        env="test",
        database_url=clean_db,
        redis_url=redis_url,
        data_dir=tmp_path / "data",
        secret_key="test-secret-key-which-is-long-enough-0123456789",
        # A commit per flush: a test that hands the aggregator a read finds it stored and
        # acknowledged (tests/test_aggregator_flush.py checks commits that span flushes).
        aggregator_commit_ms=0,
    )


@pytest.fixture
def server(tmp_path: Path, clean_db: str, redis_url: str, clean_redis: redis.Redis) -> Iterator:
    """The whole service as deployed (gateway, worker, aggregator processes) on the test database
    and Redis, for the browser tests."""
    from classpulse.cli.devserver import DevServer

    # INFO: uvicorn's access log is on, so the tests can check that no token reaches a log.
    env = {"CLASSPULSE_LOG_LEVEL": "INFO"}
    with DevServer(
        tmp_path / "service", database_url=clean_db, redis_url=redis_url, env=env
    ) as srv:
        yield srv


@pytest.fixture
def joined(settings: Settings) -> Iterator:
    """A running app, a teacher's session and Ada joined to it: gateway_helpers.Joined."""
    from tests.gateway_helpers import joined_session

    with joined_session(settings) as j:
        yield j


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    """A SQLAlchemy engine on the test database, disposed of afterwards."""
    eng = make_engine(settings.database_url or "")
    yield eng
    eng.dispose()


@pytest.fixture
def roster(engine) -> dict[str, str]:
    """A teacher, a session and two students."""
    with Session(engine) as db:
        teacher = create_user(db, "t@school.example", "correct horse battery")
        session = ClassSession(owner_id=teacher.id, title="Maths", join_code="ABCDEFGH")
        db.add(session)
        db.flush()
        students = [Student(session_id=session.id, display_name=n) for n in ("Ada", "Bo")]
        db.add_all(students)
        db.commit()
        return {"session": str(session.id), "ada": str(students[0].id), "bo": str(students[1].id)}
