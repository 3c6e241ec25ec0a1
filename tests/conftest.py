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


@pytest.fixture
def clean_db(database_url: str) -> Iterator[str]:
    """The test database with every row removed after the test."""
    yield database_url
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE users, class_sessions, students, emotion_buckets, applied_results CASCADE"
        )


@pytest.fixture
def settings(clean_db: str, clean_redis: redis.Redis, redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        env="test",
        database_url=clean_db,
        redis_url=redis_url,
        data_dir=tmp_path / "data",
        secret_key="test-secret-key-which-is-long-enough-0123456789",
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
    """A running app, a teacher's session and Ada joined to it: test_gateway_helpers.Joined."""
    from tests.test_gateway_helpers import joined_session

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
