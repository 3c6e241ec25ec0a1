"""The embedded defaults of `classpulse run`: PostgreSQL and Redis in a data folder of their own."""

from __future__ import annotations

from pathlib import Path

import psycopg
import redis

from classpulse.cli.embedded import EmbeddedServices


def test_embedded_servers_start_in_a_fresh_nested_data_folder(tmp_path: Path) -> None:
    services = EmbeddedServices(tmp_path / "not" / "yet" / "there")
    try:
        pg_url = services.start_postgres()
        redis_url = services.start_redis()
        with psycopg.connect(pg_url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        r = redis.Redis.from_url(redis_url)
        r.xadd("probe", {"x": "1"})  # Streams are there (Redis >= 5)
        assert r.xlen("probe") == 1
    finally:
        services.stop()
    assert (tmp_path / "not" / "yet" / "there" / "redis" / "appendonly.aof").exists() or any(
        (tmp_path / "not" / "yet" / "there" / "redis").glob("appendonly*")
    )
