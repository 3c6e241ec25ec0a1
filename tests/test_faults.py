"""A fast fault run in the normal suite: the real worker and aggregator processes on a private
Redis and the test database; a worker killed mid-batch and the aggregator killed and replaced
must leave exactly the buckets of a fault-free run (the full suite: bench/fault_suite.py)."""

from __future__ import annotations

import psycopg
import pytest
import redis

from tests import chaos


@pytest.fixture
def private_redis(tmp_path):
    server = chaos.PrivateRedis(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def fault_db(database_url):
    yield database_url
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE users, class_sessions, students, emotion_buckets, applied_results CASCADE"
        )


def test_worker_kill_and_aggregator_restart_store_the_reference_buckets(
    private_redis, fault_db, tmp_path
):
    r = redis.Redis.from_url(private_redis.url, socket_timeout=5)
    service = chaos.Service.on(fault_db, private_redis.url, tmp_path / "logs", reclaim_ms=1000)
    frames = chaos.FrameSet(48)
    run = dict(frames=frames, database_url=fault_db, r=r, service=service, rate=60.0, timeout=40.0)
    try:
        ref, reference = chaos.run_scenario("reference", None, **run)
        assert ref.ok and ref.frames == 48 and set(ref.exit_codes.values()) == {0}
        for name, fault in (
            ("worker_kill", chaos.kill_worker_mid_batch(r)),
            ("aggregator_kill", chaos.kill_aggregator(r, pause_s=0.2)),
        ):
            outcome, got = chaos.run_scenario(name, fault, **run)
            same, diff = chaos.compare(reference, got)
            assert outcome.ok and same, (name, outcome, diff)
            assert set(outcome.exit_codes.values()) == {0}, outcome  # SIGTERM: clean exits
    finally:
        service.stop_all()
