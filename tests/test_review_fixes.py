"""Review fixes: indexes the models declare as the migrations create them, the policy mirror
stamped by a version (not a clock), the aggregator and the alert engine surviving a student
deleted mid-batch, the audit log's own retention and the purge of students nobody ended the
session of, ``quality`` redacted outside per_student, and in-memory state that stays bounded."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
from sqlalchemy import inspect
from sqlalchemy.orm import Session

import classpulse.db as cpdb
from classpulse import contracts as c
from classpulse.db import Base
from classpulse.policy import Policy, load_stamped, read_mirror, save, write_mirror
from classpulse.retention import purge

NOW = datetime.now(UTC)


def sql(settings, query: str, *params) -> list[tuple]:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(query, params).fetchall()


# --- 1. indexes: models and migrations agree ---------------------------------------------------
def test_models_declare_the_indexes_the_migrations_create(engine):
    insp = inspect(engine)
    for table in ("emotion_buckets", "class_buckets", "alerts"):
        in_db = {ix["name"]: ix["column_names"] for ix in insp.get_indexes(table)}
        in_model = {
            ix.name: [col.name for col in ix.columns] for ix in Base.metadata.tables[table].indexes
        }
        assert in_db == in_model, table
    assert insp.get_indexes("emotion_buckets") and {
        "ix_emotion_buckets_student_id",
        "ix_emotion_buckets_bucket_start",
    } <= {ix["name"] for ix in insp.get_indexes("emotion_buckets")}
    assert "ix_alerts_student_id" in {ix["name"] for ix in insp.get_indexes("alerts")}
    columns = {col["name"] for col in insp.get_columns("org_policy")}
    assert "version" in columns and "version" in Base.metadata.tables["org_policy"].columns


def test_a_students_buckets_are_found_by_index(settings, roster):
    """The lookups by student (the FK cascade's among them) no longer read the whole table."""
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN SELECT 1 FROM emotion_buckets WHERE student_id = %s", (roster["ada"],)
            )
        )
    assert "ix_emotion_buckets_student_id" in plan, plan


# --- 2. the policy mirror: the later save wins whatever the clocks ------------------------------
def _save(engine, policy: Policy) -> int:
    with Session(engine) as db:
        version = save(db, policy, None)
        db.commit()
    with Session(engine) as db:
        assert load_stamped(db) == (policy, version)
    return version


def test_a_later_save_wins_the_mirror_whatever_the_gateways_clocks(
    engine, clean_redis, monkeypatch
):
    # A gateway whose clock runs a day fast relaxes the policy and mirrors it...
    fast = datetime.now(UTC) + timedelta(days=1)
    monkeypatch.setattr(cpdb, "utcnow", lambda: fast)
    v1 = _save(engine, Policy("per_student"))
    assert write_mirror(clean_redis, Policy("per_student"), v1)
    # ... then one with a correct clock (or the same after a step back) turns emotions off.
    monkeypatch.setattr(cpdb, "utcnow", lambda: datetime.now(UTC) - timedelta(hours=1))
    v2 = _save(engine, Policy("off"))
    assert v2 == v1 + 1
    assert write_mirror(clean_redis, Policy("off"), v2)
    assert read_mirror(clean_redis) == Policy("off")
    # A process that read PostgreSQL before the second save cannot put the first one back.
    assert not write_mirror(clean_redis, Policy("per_student"), v1)
    assert read_mirror(clean_redis) == Policy("off")


def test_a_mirror_stamped_by_the_old_clock_scheme_does_not_block_saves(engine, clean_redis):
    """Before the version column the mirror's ``stamp`` was a wall clock in microseconds."""
    far_future_us = int((time.time() + 10 * 365 * 86400) * 1_000_000)
    clean_redis.hset(
        c.POLICY_KEY,
        mapping={
            "stamp": far_future_us,
            "emotion_mode": "per_student",
            "min_group_size": 5,
            "retention_days": 30,
        },
    )
    version = _save(engine, Policy("off"))
    assert write_mirror(clean_redis, Policy("off"), version)
    assert read_mirror(clean_redis) == Policy("off")
    # and gateways still running the old script (compare `stamp`) no longer write over it
    assert int(clean_redis.hget(c.POLICY_KEY, "stamp")) > far_future_us


def test_concurrent_saves_get_distinct_increasing_versions(engine):
    versions: list[int] = []
    lock = threading.Lock()

    def one(mode: str) -> None:
        v = _save_quiet(engine, Policy(mode))  # type: ignore[arg-type]
        with lock:
            versions.append(v)

    threads = [threading.Thread(target=one, args=(m,)) for m in ("off", "aggregate_only") * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(versions) == list(range(min(versions), min(versions) + 8))


def _save_quiet(engine, policy: Policy) -> int:
    with Session(engine) as db:
        version = save(db, policy, None)
        db.commit()
    return version


# --- 3. a student deleted while their results are in flight -------------------------------------
def _result(roster, student: str, n: int) -> c.FrameResult:
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


def _waiting_on_lock(settings, pid: int) -> bool:
    rows = sql(settings, "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", pid)
    return bool(rows) and rows[0][0] == "Lock"


def _delete_in_thread(settings, student_id: str) -> tuple[threading.Thread, dict]:
    """Delete the student from another connection, in a thread (it may have to wait)."""
    out: dict = {}
    conn = psycopg.connect(settings.database_url, autocommit=True)
    out["pid"] = conn.info.backend_pid

    def run() -> None:
        try:
            conn.execute("DELETE FROM students WHERE id = %s", (student_id,))
            out["done"] = time.monotonic()
        except Exception as exc:  # pragma: no cover - reported by the test
            out["error"] = exc
        finally:
            conn.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_a_student_deleted_during_a_batch_waits_for_its_commit(
    settings, clean_redis, engine, roster, monkeypatch
):
    from worker.aggregator import Aggregator

    agg = Aggregator(settings, clean_redis, engine)
    write_mirror(clean_redis, Policy("per_student"), 1)
    original = Aggregator.known_students
    state: dict = {}

    def known_then_delete(self, conn, ids):
        known = original(self, conn, ids)
        thread, out = _delete_in_thread(settings, roster["ada"])  # an admin's request
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and thread.is_alive():
            if _waiting_on_lock(settings, out["pid"]):
                break
            time.sleep(0.02)
        state["thread"], state["out"] = thread, out
        state["waited"] = thread.is_alive()
        return known

    monkeypatch.setattr(Aggregator, "known_students", known_then_delete)
    applied = agg.commit([_result(roster, "ada", 1), _result(roster, "bo", 2)])  # no IntegrityError
    state["thread"].join(10)
    assert "error" not in state["out"]
    assert state["waited"], "the delete did not wait for the batch's commit"
    assert {r.student_id for r in applied} == {roster["ada"], roster["bo"]}
    # The cascade removed what the batch had stored for her; Bo's stays.
    assert sql(settings, "SELECT student_id::text FROM emotion_buckets") == [(roster["bo"],)]


def test_a_foreign_key_violation_refolds_the_batch_without_the_deleted_student(
    settings, clean_redis, engine, roster, monkeypatch
):
    """Whatever makes the upsert's foreign key fail, the aggregator folds the batch again with
    the students read afresh, instead of exiting."""
    from worker.aggregator import Aggregator

    agg = Aggregator(settings, clean_redis, engine)
    write_mirror(clean_redis, Policy("per_student"), 1)
    original = Aggregator.known_students
    calls = []

    def stale_first(self, conn, ids):
        calls.append(1)
        if len(calls) == 1:  # as if read just before an admin's delete committed
            sql_exec(settings, "DELETE FROM students WHERE id = %s", roster["ada"])
            return {roster["ada"], roster["bo"]}
        return original(self, conn, ids)

    monkeypatch.setattr(Aggregator, "known_students", stale_first)
    results = [_result(roster, "ada", 1), _result(roster, "bo", 2)]
    applied = agg.commit(results)
    assert len(calls) == 2
    assert [r.student_id for r in applied] == [roster["bo"]]
    assert sql(settings, "SELECT student_id::text FROM emotion_buckets") == [(roster["bo"],)]
    # The batch's frame ids are recorded once (the first attempt was rolled back).
    assert sql(settings, "SELECT count(*) FROM applied_results") == [(2,)]


def _stalled_state(r, roster, student: str, now: float) -> None:
    """A connected student whose frames stopped a minute ago: the "stalled" rule opens at once."""
    session, sid = roster["session"], roster[student]
    presence = c.LiveUpdate(type="presence", session_id=session, student_id=sid, t=now - 100)
    update = c.LiveUpdate(type="student", session_id=session, student_id=sid, t=now - 60, faces=1)
    r.hset(c.presence_key(session), sid, c.encoder.encode(presence))
    r.hset(c.snapshot_key(session), sid, c.encoder.encode(update))


def test_the_alert_engine_survives_a_student_deleted_during_an_evaluation(
    settings, clean_redis, engine, roster, monkeypatch
):
    from worker.alerts import AlertEngine

    now = time.time()
    _stalled_state(clean_redis, roster, "ada", now)
    alerts = AlertEngine(clean_redis, engine, "aggregator-test")
    original = AlertEngine._state
    state: dict = {}

    def state_then_delete(self, session_id, roster_rows):
        out = original(self, session_id, roster_rows)
        thread, info = _delete_in_thread(settings, roster["ada"])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and thread.is_alive():
            if _waiting_on_lock(settings, info["pid"]):
                break
            time.sleep(0.02)
        state["thread"], state["info"], state["waited"] = thread, info, thread.is_alive()
        return out

    monkeypatch.setattr(AlertEngine, "_state", state_then_delete)
    alerts.observe([_result(roster, "ada", 1)])
    alerts.tick(now)  # raised IntegrityError (and stopped the aggregator) before
    state["thread"].join(10)
    assert "error" not in state["info"]
    assert state["waited"]
    assert sql(settings, "SELECT count(*) FROM students") == [(1,)]
    assert sql(settings, "SELECT count(*) FROM alerts") == [(0,)]  # went with her


def test_an_integrity_error_in_the_alert_rules_is_not_fatal(
    settings, clean_redis, engine, roster, monkeypatch
):
    from sqlalchemy.exc import IntegrityError

    from worker.alerts import AlertEngine

    alerts = AlertEngine(clean_redis, engine, "aggregator-test")

    def boom(self, session_id, now=None):
        raise IntegrityError("INSERT INTO alerts", {}, Exception("fk violation"))

    monkeypatch.setattr(AlertEngine, "evaluate_session", boom)
    alerts.observe([_result(roster, "ada", 1)])
    alerts.tick()  # logged; evaluated again next tick
    assert roster["session"] in alerts.active


# --- 4. retention: the audit log's own period; students of sessions nobody ended -------------------
def _audit(settings, tag: str, at: datetime) -> None:
    sql_exec(
        settings,
        "INSERT INTO audit_log (action, target_id, at) VALUES ('export.report', %s, %s)",
        tag,
        at,
    )


def sql_exec(settings, query: str, *params) -> None:
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(query, params)


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


# --- 5. quality is part of the per-student estimate ----------------------------------------------
def test_quality_is_redacted_outside_per_student():
    from app.privacy import redact_update
    from worker.policy_reader import redact

    for mode in ("aggregate_only", "off"):
        update = c.LiveUpdate(
            type="student",
            session_id="s",
            student_id="u",
            t=0.0,
            emotion="uncertain",
            confidence=0.3,
            probs={"happy": 0.3},
            quality="face_too_small",
            faces=1,
        )
        out = redact(update, mode)
        assert (out.emotion, out.confidence, out.probs, out.quality) == (None, None, None, None)
        shown = redact_update(
            {"emotion": "uncertain", "quality": "few_frames", "faces": 1}, Policy(mode)
        )  # type: ignore[arg-type]
        assert shown is not None and shown["quality"] is None and shown["faces"] == 1
    kept = redact(
        c.LiveUpdate(type="student", session_id="s", student_id="u", t=0.0, quality="few_frames"),
        "per_student",
    )
    assert kept.quality == "few_frames"


# --- 6. bounded in-memory state ------------------------------------------------------------------
def test_idle_student_states_are_dropped(settings, clean_redis, engine, roster):
    from worker.aggregator import STATE_IDLE_S, Aggregator

    agg = Aggregator(settings, clean_redis, engine)
    agg.live_update(_result(roster, "ada", 1))
    agg.live_update(_result(roster, "bo", 2))
    agg.students[roster["ada"]].used -= STATE_IDLE_S + 1
    agg.prune()
    assert set(agg.students) == {roster["bo"]}


def test_the_class_mix_forgets_sessions_nobody_is_in(monkeypatch):
    import worker.class_mix as wp

    clock = [1000.0]
    monkeypatch.setattr(wp.time, "monotonic", lambda: clock[0])
    for mode in ("per_student", "aggregate_only"):
        mix = wp.ClassMix()
        for i in range(50):
            mix.observe(
                c.LiveUpdate(
                    type="student",
                    session_id=f"s{i}",
                    student_id="u",
                    t=0.0,
                    faces=1,
                    emotion="happy",
                )
            )
        mix.updates(Policy(mode))  # type: ignore[arg-type]
        clock[0] += wp.PRESENT_WINDOW_S + wp.CLASS_PUBLISH_S + 1
        final = mix.updates(Policy(mode))  # type: ignore[arg-type]
        if mode == "aggregate_only":  # the last word for each: nobody present
            assert len(final) == 50 and all(u.present == 0 for u in final)
        assert not mix._seen and not mix._dirty and not mix._published, mode


def test_stale_worker_lag_reports_are_removed(clean_redis):
    from worker.service import LAG_FORGET_S, prune_worker_lag

    now = time.time()
    clean_redis.hset(
        c.WORKER_LAG_KEY,
        mapping={
            "worker-dead": f"1200 {now - LAG_FORGET_S - 10:.1f}",
            "worker-live": f"40 {now - 1:.1f}",
            "worker-junk": "nonsense",
        },
    )
    assert prune_worker_lag(clean_redis, now) == 2
    assert set(clean_redis.hgetall(c.WORKER_LAG_KEY)) == {b"worker-live"}


def test_students_of_a_session_that_ended_go_with_it(settings, engine, roster):
    old = NOW - timedelta(days=40)
    sql_exec(settings, "UPDATE class_sessions SET ended_at = %s", old)
    sql_exec(settings, "UPDATE students SET joined_at = %s", old - timedelta(hours=1))
    sql_exec(
        settings,
        "INSERT INTO consent_records (session_id, student_id, action, consent_version, at)"
        " VALUES (%s, %s, 'accepted', 'v1', %s)",
        roster["session"],
        roster["ada"],
        old,
    )
    counts = purge(engine, NOW)
    assert (counts["students"], counts["consent_records"]) == (2, 1)
    assert sql(settings, "SELECT count(*) FROM consent_records") == [(0,)]
