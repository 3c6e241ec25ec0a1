"""Several workers and aggregators sharing the streams through consumer groups; a dead worker's
fresh frames taken over, its stale ones dropped and counted; nothing lost or counted twice."""

from __future__ import annotations

import time

import pytest
from sqlalchemy.orm import Session

from classpulse import contracts as c
from classpulse.db import EmotionBucket
from tests import stream_helpers as streams
from tests.pipeline_helpers import Aggregator, InferenceWorker
from tests.stream_helpers import add_frame, buckets, loops_running, stats, wait_for_frames

# The stream tests' fixture (models loaded once per module), shared.
pipeline = streams.pipeline


def test_three_workers_and_two_aggregators_share_the_work(
    settings, clean_redis, roster, engine, pipeline
):
    r = clean_redis
    workers = [InferenceWorker(settings, r, pipeline) for _ in range(3)]
    aggregators = [Aggregator(settings, r, engine) for _ in range(2)]
    for i, x in enumerate(workers + aggregators):
        x.name = f"{x.name}-{i}"  # one process here: distinct consumer names
    with loops_running(workers + aggregators, join_s=15) as threads:
        time.sleep(0.5)  # every consumer blocked in XREADGROUP: Redis hands entries out in turn
        for i in range(60):
            add_frame(r, roster, student="ada" if i % 2 else "bo", seq=i + 1)
            time.sleep(0.01)
        wait_for_frames(engine, 60, timeout_s=30)
        # More than one worker did some of it (a lag report per worker that processed frames;
        # read while they run: a worker that stops removes its own report).
        lag_reports = r.hgetall(c.WORKER_LAG_KEY)
    assert not any(t.is_alive() for t in threads)  # every loop stopped cleanly
    assert sum(b.frames for b in buckets(engine)) == 60  # each frame exactly once
    # One result per frame, none written twice; each deleted once stored.
    assert r.xinfo_stream(c.RESULTS_STREAM)["entries-added"] == 60
    assert r.xlen(c.RESULTS_STREAM) == 0
    consumers = {x["name"].decode(): x for x in r.xinfo_consumers(c.FRAMES_STREAM, c.WORKER_GROUP)}
    assert len(consumers) == 3 and all(x["pending"] == 0 for x in consumers.values())
    assert stats(r)["worker.processed"] == 60 and stats(r)["aggregator.applied"] == 60
    assert len(lag_reports) >= 2
    assert r.hgetall(c.WORKER_LAG_KEY) == {}  # each stopped worker removed its own report
    groups = r.xinfo_consumers(c.RESULTS_STREAM, c.AGGREGATOR_GROUP)
    assert len(groups) == 2


def test_a_dead_workers_fresh_frames_are_taken_over_and_stale_ones_dropped(
    settings, clean_redis, roster, engine, pipeline
):
    r = clean_redis
    settings = settings.model_copy(update={"reclaim_idle_ms": 200, "frame_max_age_ms": 3000})
    dead = InferenceWorker(settings, r, pipeline)
    dead.name = "worker-dead"
    dead.setup()
    for seq in (1, 2):
        add_frame(r, roster, seq=seq)  # fresh
    for seq in (3, 4, 5):
        add_frame(r, roster, student="bo", seq=seq, age_ms=2900)  # stale by the time it's reclaimed
    taken = r.xreadgroup(c.WORKER_GROUP, dead.name, {c.FRAMES_STREAM: ">"}, count=10)[0][1]
    assert len(taken) == 5  # ...and then it died mid-batch, acknowledging nothing
    time.sleep(0.3)
    alive = InferenceWorker(settings, r, pipeline)
    entries = alive.read_batch()
    assert [e[0] for e in entries] == [e[0] for e in taken]  # reclaimed, not read anew
    assert alive.process(entries) == 2
    counts = stats(r)
    assert counts["worker.processed"] == 2 and counts["worker.dropped.stale"] == 3
    assert r.xpending(c.FRAMES_STREAM, c.WORKER_GROUP)["pending"] == 0
    # Per student, for the dashboard and the stream-stats API.
    per_student = r.hgetall(c.stream_stats_key(roster["session"]))
    assert int(per_student[f"{roster['ada']}:processed".encode()]) == 2
    assert int(per_student[f"{roster['bo']}:dropped.stale".encode()]) == 3
    lag_ms, _ = r.hget(c.WORKER_LAG_KEY, alive.name).split()
    assert float(lag_ms) >= 2900  # how far behind: the gateways lower the pages' rate on it

    # The results of the reclaimed frames are stored once, even when read twice.
    agg = Aggregator(settings, r, engine)
    from classpulse.streams import ensure_group

    ensure_group(r, c.RESULTS_STREAM, c.AGGREGATOR_GROUP)
    entries = agg.read_batch()
    agg.handle(entries)
    agg.handle(entries)  # a replay
    with Session(engine) as db:
        assert sum(b.frames for b in db.query(EmotionBucket)) == 2


@pytest.mark.parametrize(
    "configured,gpu,expected", [(None, False, 32), (None, True, 128), (8, True, 8)]
)
def test_worker_batch_size_is_chosen_for_the_device(
    settings, pipeline, monkeypatch, configured, gpu, expected
):
    from worker.runtime import OnnxModel
    from worker.service import batch_size

    monkeypatch.setattr(OnnxModel, "uses_gpu", property(lambda self: gpu))  # no GPU on this machine
    assert (
        batch_size(settings.model_copy(update={"worker_batch_size": configured}), pipeline)
        == expected
    )


def test_batch_size_setting_accepts_auto(monkeypatch):
    from classpulse.settings import Settings

    monkeypatch.setenv("CLASSPULSE_WORKER_BATCH_SIZE", "auto")
    assert Settings().worker_batch_size is None
    monkeypatch.setenv("CLASSPULSE_WORKER_BATCH_SIZE", "64")
    assert Settings().worker_batch_size == 64
