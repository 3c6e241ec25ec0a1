"""In-memory and Redis state stays bounded: idle students, empty sessions, stale lag reports."""

from __future__ import annotations

import time
from datetime import timedelta

from classpulse import contracts as c
from classpulse.policy import Policy
from records.retention import purge
from tests.db_helpers import NOW, frame_result, sql, sql_exec


# --- 6. bounded in-memory state ------------------------------------------------------------------
def test_idle_student_states_are_dropped(settings, clean_redis, engine, roster):
    from aggregator.live_state import STATE_IDLE_S
    from tests.pipeline_helpers import Aggregator

    agg = Aggregator(settings, clean_redis, engine)
    agg.live_update(frame_result(roster, "ada", 1))
    agg.live_update(frame_result(roster, "bo", 2))
    agg.students[roster["ada"]].used -= STATE_IDLE_S + 1
    agg.prune()
    assert set(agg.students) == {roster["bo"]}


def test_the_class_mix_forgets_sessions_nobody_is_in(monkeypatch):
    import aggregator.class_mix as wp

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
