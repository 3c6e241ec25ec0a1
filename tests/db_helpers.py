"""Raw SQL against the test database, and results to fold into it, for tests of what is stored."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import psycopg

from classpulse import contracts as c

NOW = datetime.now(UTC)


def sql(settings, query: str, *params) -> list[tuple]:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(query, params).fetchall()


def sql_exec(settings, query: str, *params) -> None:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(query, params)


def frame_result(roster, student: str, n: int) -> c.FrameResult:
    """A result for one of the roster's students: one happy face."""
    return c.FrameResult(
        frame_id=f"{int(time.time() * 1000)}-{n}-{uuid.uuid4().hex[:6]}",
        session_id=roster["session"],
        student_id=roster[student],
        seq=n,
        received_ms=time.time() * 1000,
        processed_ms=time.time() * 1000,
        width=320,
        height=240,
        faces=[c.Face((10, 10, 100, 100), 0.9, {"happy": 0.9, "sad": 0.1})],
        models={},
        timings_ms={},
    )
