"""Retention: the audit log keeps its own, longer period; students of sessions nobody ended go
after their last activity, those of ended sessions with the session."""

from __future__ import annotations

from datetime import datetime, timedelta

from records.retention import purge
from tests.db_helpers import NOW, sql, sql_exec


# --- 4. retention: the audit log's own period; students of sessions nobody ended -------------------
def _audit(settings, tag: str, at: datetime) -> None:
    sql_exec(
        settings,
        "INSERT INTO audit_log (action, target_id, at) VALUES ('export.report', %s, %s)",
        tag,
        at,
    )


def _retention(settings, days: int) -> None:
    sql_exec(
        settings,
        "INSERT INTO org_policy (id, retention_days) VALUES (1, %s)"
        " ON CONFLICT (id) DO UPDATE SET retention_days = excluded.retention_days",
        days,
    )


def test_the_audit_log_outlives_a_short_data_retention(settings, engine, roster):
    _retention(settings, 1)
    _audit(settings, "2 days", NOW - timedelta(days=2))
    _audit(settings, "400 days", NOW - timedelta(days=400))
    counts = purge(engine, NOW)  # CLASSPULSE_AUDIT_RETENTION_DAYS: 365 by default
    assert counts["audit_log"] == 1
    assert sql(settings, "SELECT target_id FROM audit_log") == [("2 days",)]
    # A configured period shorter than the data's is raised to it.
    _retention(settings, 30)
    _audit(settings, "10 days", NOW - timedelta(days=10))
    purge(engine, NOW, audit_days=1)
    assert sorted(sql(settings, "SELECT target_id FROM audit_log")) == [("10 days",), ("2 days",)]
    purge(engine, NOW + timedelta(days=29), audit_days=1)  # both now past 30 days
    assert sql(settings, "SELECT target_id FROM audit_log") == []


def test_audit_retention_setting(monkeypatch):
    from classpulse.settings import Settings

    assert Settings().audit_retention_days == 365
    monkeypatch.setenv("CLASSPULSE_AUDIT_RETENTION_DAYS", "730")
    assert Settings().audit_retention_days == 730


def test_students_of_a_session_nobody_ended_go_after_their_last_activity(settings, engine, roster):
    old, recent = NOW - timedelta(days=40), NOW - timedelta(days=2)
    session, ada, bo = roster["session"], roster["ada"], roster["bo"]
    # Both joined long ago, in a session still "live"; only Bo has streamed lately.
    sql_exec(settings, "UPDATE students SET joined_at = %s, consent_at = %s", old, old)
    sql_exec(
        settings,
        "INSERT INTO emotion_buckets (session_id, student_id, bucket_start, frames,"
        " frames_with_face, prob_sums) VALUES (%s, %s, %s, 1, 1, '{}'), (%s, %s, %s, 1, 1, '{}')",
        session,
        ada,
        old,
        session,
        bo,
        recent,
    )
    for sid in (ada, bo):  # consent records as old as the join
        sql_exec(
            settings,
            "INSERT INTO consent_records (session_id, student_id, action, consent_version, at)"
            " VALUES (%s, %s, 'accepted', 'v1', %s)",
            session,
            sid,
            old,
        )
    counts = purge(engine, NOW)
    assert counts["students"] == 1 and counts["consent_records"] == 1
    assert sql(settings, "SELECT id::text FROM students") == [(bo,)]
    # Bo still exists: his consent record, the basis of what is kept about him, stays.
    assert sql(settings, "SELECT student_id::text FROM consent_records") == [(bo,)]
    assert sql(settings, "SELECT student_id::text FROM emotion_buckets") == [(bo,)]


def test_a_recent_join_without_data_is_kept(settings, engine, roster):
    counts = purge(engine, NOW)
    assert counts["students"] == 0
    assert len(sql(settings, "SELECT id FROM students")) == 2
