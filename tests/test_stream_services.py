"""Worker and aggregator on the real Redis and PostgreSQL: results flow, bad frames are counted,
nothing is lost or counted twice across restarts and replays."""

from __future__ import annotations

import time
import uuid

import msgspec
import pytest
from sqlalchemy.orm import Session

from classpulse import contracts as c
from classpulse.db import Student
from tests import stream_helpers as _stream_helpers
from tests.pipeline_helpers import Aggregator, InferenceWorker
from tests.stream_helpers import (
    add_frame,
    buckets,
    drain_worker,
    jpeg,
    loops_running,
    make_result,
    push,
    run_aggregator,
    stats,
    wait_for_frames,
)

pipeline = _stream_helpers.pipeline  # a fixture of tests/stream_helpers.py, shared


def test_worker_writes_one_result_per_good_frame_and_counts_the_rest(
    settings, clean_redis, roster, pipeline
):
    r = clean_redis
    worker = InferenceWorker(settings, r, pipeline)
    worker.setup()
    add_frame(r, roster, seq=1)
    add_frame(r, roster, seq=2, data=jpeg(face=False))
    add_frame(r, roster, seq=3, data=b"\x89PNG\r\n\x1a\n not a jpeg")
    add_frame(r, roster, seq=4, data=jpeg()[:300])
    add_frame(r, roster, seq=5, age_ms=settings.frame_max_age_ms + 500)
    r.xadd(c.FRAMES_STREAM, {c.F_VERSION: b"1", b"junk": b"no fields we know"})
    assert drain_worker(worker) == 2
    results = [c.result_decoder.decode(f[c.R_DATA]) for _, f in r.xrange(c.RESULTS_STREAM)]
    assert [res.seq for res in results] == [1, 2]
    face_result, empty_result = results
    assert len(face_result.faces) == 1 and empty_result.faces == []
    probs = face_result.faces[0].probs
    assert list(probs) == list(pipeline.labels) and max(probs, key=probs.get) == "happy"
    assert face_result.models["emotion"].startswith("mini_xception") and face_result.width == 320
    assert {"decode", "detect", "classify"} <= set(face_result.timings_ms)
    counts = stats(r)
    assert counts["worker.processed"] == 2
    assert counts["worker.dropped.not_jpeg"] == 1
    assert counts["worker.dropped.corrupt"] == 1
    assert counts["worker.dropped.stale"] == 1
    assert counts["worker.dropped.malformed"] == 1
    # Every frame, good or bad, is acknowledged: nothing stays pending.
    assert r.xpending(c.FRAMES_STREAM, c.WORKER_GROUP)["pending"] == 0
    assert r.hget(c.MODEL_INFO_KEY, "labels") is not None
    assert any(k.startswith(c.WORKER_HEARTBEAT_PREFIX.encode()) for k in r.scan_iter())


def test_frames_of_a_dead_worker_are_reclaimed(
    settings, clean_redis, roster, pipeline, monkeypatch
):
    import worker.service as service

    r = clean_redis
    dead = InferenceWorker(settings, r, pipeline)
    dead.name = "worker-dead"
    dead.setup()
    add_frame(r, roster, seq=7)
    r.xreadgroup(c.WORKER_GROUP, dead.name, {c.FRAMES_STREAM: ">"}, count=10)  # then it "dies"
    monkeypatch.setattr(service, "RECLAIM_IDLE_MS", 0)
    alive = InferenceWorker(settings, r, pipeline)
    entries = alive.read_batch()
    assert len(entries) == 1
    alive.process(entries)
    assert r.xlen(c.RESULTS_STREAM) == 1
    assert r.xpending(c.FRAMES_STREAM, c.WORKER_GROUP)["pending"] == 0


def test_aggregator_folds_results_into_buckets_exactly_once(settings, clean_redis, roster, engine):
    r = clean_redis
    t0 = 1_700_000_000_000.0  # on a 5 s bucket boundary
    results = [
        make_result(roster, "ada", t0 + 100, 0.9),
        make_result(roster, "ada", t0 + 1100, 0.7),
        make_result(roster, "ada", t0 + 2100, None),  # no face in that frame
        make_result(roster, "ada", t0 + 5100, 0.5),  # next bucket
        make_result(roster, "bo", t0 + 300, 0.1),
    ]
    push(r, results)
    pubsub = r.pubsub()
    pubsub.subscribe(c.live_channel(roster["session"]))
    run_aggregator(Aggregator(settings, r, engine))
    rows = buckets(engine)
    by = {(str(b.student_id), b.bucket_start.timestamp()): b for b in rows}
    first = by[(roster["ada"], t0 / 1000)]
    assert (first.frames, first.frames_with_face) == (3, 2)
    assert first.prob_sums["happy"] == pytest.approx(1.6)
    assert by[(roster["ada"], t0 / 1000 + 5)].frames == 1
    assert by[(roster["bo"], t0 / 1000)].prob_sums["happy"] == pytest.approx(0.1)
    assert r.xpending(c.RESULTS_STREAM, c.AGGREGATOR_GROUP)["pending"] == 0

    # The same frames again (a worker reclaimed them, or an aggregator died between commit and
    # XACK): the buckets must not change.
    push(r, results)
    run_aggregator(Aggregator(settings, r, engine))
    assert [(b.frames, b.frames_with_face) for b in buckets(engine)] == [
        (b.frames, b.frames_with_face) for b in rows
    ]
    assert stats(r)["aggregator.skipped"] == len(results)

    # Live updates: published and kept as the snapshot for late dashboards.
    snapshot = r.hgetall(c.snapshot_key(roster["session"]))
    ada = msgspec.json.decode(snapshot[roster["ada"].encode()], type=c.LiveUpdate)
    assert ada.emotion in ("happy", "uncertain") and ada.probs is not None
    messages = []
    deadline = time.time() + 2
    while time.time() < deadline and len(messages) < 2:
        m = pubsub.get_message(timeout=0.2)
        if m and m["type"] == "message":
            messages.append(c.live_decoder.decode(m["data"]))
    assert {m.student_id for m in messages} == {roster["ada"], roster["bo"]}
    pubsub.close()


def test_results_survive_an_aggregator_crash_before_acknowledging(
    settings, clean_redis, roster, engine
):
    r = clean_redis
    t0 = 1_700_000_100_000.0
    push(r, [make_result(roster, "ada", t0 + i * 100, 0.8) for i in range(10)])
    crashed = Aggregator(settings, r, engine)
    crashed.name = "aggregator-crashed"
    from classpulse.streams import ensure_group

    ensure_group(r, c.RESULTS_STREAM, c.AGGREGATOR_GROUP)
    entries = crashed.read_batch()
    crashed._pending_own = False
    assert len(entries) == 10
    crashed.commit([c.result_decoder.decode(f[c.R_DATA]) for _, f in entries])  # committed...
    # ...and died before XACK. Its restart (same consumer name) re-reads its pending entries.
    restarted = Aggregator(settings, r, engine)
    restarted.name = "aggregator-crashed"
    run_aggregator(restarted)
    (bucket,) = buckets(engine)
    assert bucket.frames == 10
    assert r.xpending(c.RESULTS_STREAM, c.AGGREGATOR_GROUP)["pending"] == 0


def test_results_for_withdrawn_or_unknown_students_are_not_stored(
    settings, clean_redis, roster, engine
):
    from datetime import UTC, datetime

    with Session(engine) as db:
        db.get(Student, uuid.UUID(roster["bo"])).withdrawn_at = datetime.now(UTC)
        db.commit()
    r = clean_redis
    ghost = dict(roster, ghost=str(uuid.uuid4()))
    push(
        r,
        [
            make_result(roster, "bo", 1_700_000_200_000.0, 0.5),
            make_result(ghost, "ghost", 1_700_000_200_000.0, 0.5),
        ],
    )
    r.xadd(c.RESULTS_STREAM, {c.R_DATA: b"{not json"})
    run_aggregator(Aggregator(settings, r, engine))
    assert buckets(engine) == []
    assert stats(r)["aggregator.malformed"] == 1


def test_worker_and_aggregator_loops_end_to_end(settings, clean_redis, roster, engine, pipeline):
    """The real loops in threads: frames in, buckets out, then a clean stop."""
    r = clean_redis
    worker = InferenceWorker(settings, r, pipeline)
    agg = Aggregator(settings, r, engine)
    with loops_running((worker, agg), join_s=10) as threads:
        for i in range(6):
            add_frame(r, roster, student="ada" if i % 2 else "bo", seq=i + 1)
        wait_for_frames(engine, 6, timeout_s=20)
    rows = buckets(engine)
    assert sum(b.frames for b in rows) == 6 and sum(b.frames_with_face for b in rows) == 6
    assert not any(t.is_alive() for t in threads)
    assert not r.keys(c.WORKER_HEARTBEAT_PREFIX + "*")  # heartbeat removed on a clean stop
