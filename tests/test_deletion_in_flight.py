"""A student deleted while their results are in flight: the aggregator and the alert engine
wait for, or refold around, the deletion and never crash."""

from __future__ import annotations

import threading
import time

import psycopg

from classpulse import contracts as c
from classpulse.policy import Policy, write_mirror
from tests.db_helpers import frame_result, sql, sql_exec


# --- 3. a student deleted while their results are in flight -------------------------------------
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
    from tests.pipeline_helpers import Aggregator

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
    applied = agg.commit(
        [frame_result(roster, "ada", 1), frame_result(roster, "bo", 2)]
    )  # no IntegrityError
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
    from tests.pipeline_helpers import Aggregator

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
    results = [frame_result(roster, "ada", 1), frame_result(roster, "bo", 2)]
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
    from aggregator.alerts import AlertEngine

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
    alerts.observe([frame_result(roster, "ada", 1)])
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

    from aggregator.alerts import AlertEngine

    alerts = AlertEngine(clean_redis, engine, "aggregator-test")

    def boom(self, session_id, now=None):
        raise IntegrityError("INSERT INTO alerts", {}, Exception("fk violation"))

    monkeypatch.setattr(AlertEngine, "evaluate_session", boom)
    alerts.observe([frame_result(roster, "ada", 1)])
    alerts.tick()  # logged; evaluated again next tick
    assert roster["session"] in alerts.active
