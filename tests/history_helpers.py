"""Helpers for the history, report and alert tests (no tests here): a session with known buckets."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from classpulse import policy as org_policy
from classpulse.db import Alert, ClassBucket, ClassSession, EmotionBucket, Student, make_engine
from classpulse.policy import Policy
from classpulse.settings import Settings

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(seconds=5)


@dataclass
class Seeded:
    session_id: str
    ada: str
    bob: str
    cy: str


@contextmanager
def db_session(settings: Settings) -> Iterator[Session]:
    """An ORM session on the test database, its engine disposed of afterwards."""
    engine = make_engine(settings.database_url or "")
    try:
        with Session(engine) as db:
            yield db
    finally:
        engine.dispose()


def seed_session(
    settings: Settings, owner_id: int, title: str = "Maths 4B", at: datetime = T0
) -> Seeded:
    """Three students; Ada and Bob have buckets with known sums, Cy none.

    bucket at+0: Ada 4 frames, 4 faced, happy 3.0 sad 1.0; Bob 5 frames, 4 faced, sad 2.5
    neutral 1.5. bucket at+5: Ada 5/5, happy 5.0; Bob 3 frames, none faced. Two alerts.
    """
    t1 = at + timedelta(seconds=5)
    with db_session(settings) as db:
        s = ClassSession(
            owner_id=owner_id,
            title=title,
            join_code=uuid.uuid4().hex[:8].upper(),
            created_at=at,
            ended_at=at + timedelta(minutes=10),
        )
        db.add(s)
        db.flush()
        ada, bob, cy = (
            Student(session_id=s.id, display_name=n, joined_at=at + timedelta(seconds=i))
            for i, n in enumerate(("Ada", "Bob", "Cy"))
        )
        db.add_all([ada, bob, cy])
        db.flush()
        db.add_all(
            EmotionBucket(
                session_id=s.id,
                student_id=student.id,
                bucket_start=start,
                frames=frames,
                frames_with_face=faced,
                prob_sums=sums,
            )
            for student, start, frames, faced, sums in (
                (ada, at, 4, 4, {"happy": 3.0, "sad": 1.0}),
                (bob, at, 5, 4, {"sad": 2.5, "neutral": 1.5}),
                (ada, t1, 5, 5, {"happy": 5.0}),
                (bob, t1, 3, 0, {}),
            )
        )
        db.add_all(
            [
                Alert(
                    session_id=s.id,
                    rule="negative_share",
                    started_at=at + timedelta(minutes=2),
                    ended_at=at + timedelta(minutes=3),
                    message="2 of 4 students showed negative expressions for 2 min — consider checking in.",
                ),
                Alert(
                    session_id=s.id,
                    student_id=bob.id,
                    rule="no_face",
                    started_at=at + timedelta(minutes=4),
                    message="No face has been visible in Bob's camera for 3 min while it is on.",
                ),
            ]
        )
        db.commit()
        return Seeded(str(s.id), str(ada.id), str(bob.id), str(cy.id))


def add_class_bucket(
    settings: Settings,
    session_id: str,
    at: datetime,
    frames: int,
    faced: int,
    sums: dict[str, float],
) -> None:
    with db_session(settings) as db:
        db.add(
            ClassBucket(
                session_id=uuid.UUID(session_id),
                bucket_start=at,
                frames=frames,
                frames_with_face=faced,
                prob_sums=sums,
            )
        )
        db.commit()


def set_policy(settings: Settings, mode: str, min_group_size: int = 5) -> None:
    with db_session(settings) as db:
        org_policy.save(db, Policy(mode, min_group_size), None)  # type: ignore[arg-type]
        db.commit()


def wait_until_stored(page, dashboard_url: str, timeout_s: float = 15.0) -> None:
    """Wait until the session's history API has a row: the aggregator shows results live at
    once but stores them every CLASSPULSE_AGGREGATOR_COMMIT_MS, so a history opened the moment
    the dashboard shows something may still say "no stored data yet"."""
    import time

    url = dashboard_url.replace("/sessions/", "/api/sessions/", 1) + "/history"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = page.request.get(url)
        if r.ok and r.json().get("rows"):
            return
        time.sleep(0.25)
    raise AssertionError(f"nothing stored for {dashboard_url} within {timeout_s} s")
