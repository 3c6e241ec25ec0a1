"""Stream shards (CLASSPULSE_STREAM_SHARDS): one shard keeps today's key names; with several,
sessions spread over the shards by a stable rule, workers and aggregators consume every shard
(or the ones they own), and every result lands exactly once in PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections import Counter

import pytest
import redis
from redis.asyncio import Redis
from sqlalchemy.orm import Session

from app.frame_sink import FrameSink
from classpulse import contracts as c
from classpulse.db import ClassSession, Student, User
from classpulse.settings import Settings
from tests import stream_helpers as streams
from tests.pipeline_helpers import Aggregator, InferenceWorker
from tests.stream_helpers import buckets, jpeg, loops_running, stats, wait_for_frames

pipeline = streams.pipeline  # the models, loaded once per module


def test_one_shard_keeps_todays_key_names():
    assert Settings().stream_shards == 1 and Settings().owned_shards == [0]
    assert c.frames_stream(0, 1) == c.FRAMES_STREAM == "cp:frames"
    assert c.results_stream(0, 1) == c.RESULTS_STREAM == "cp:results"
    assert c.frames_streams(1) == ["cp:frames"] and c.results_streams(1) == ["cp:results"]
    assert c.result_id("1700000000000-0", 0, 1) == "1700000000000-0"  # idempotency keys too
    assert all(c.shard_of(str(uuid.uuid4()), 1) == 0 for _ in range(20))


def test_several_shards_are_named_with_cluster_hash_tags():
    assert c.frames_streams(4) == [f"cp:frames:{{{k}}}" for k in range(4)]
    assert c.results_streams(4) == [f"cp:results:{{{k}}}" for k in range(4)]
    # A shard's frames and results share the hash tag (one Cluster slot: the worker's MULTI/EXEC).
    for k in range(4):
        tag = c.frames_stream(k, 4).split("{")[1]
        assert c.results_stream(k, 4).endswith("{" + tag)
    assert c.result_id("5-0", 3, 4) == "5-0@3"


def test_the_shard_rule_is_the_same_in_every_process():
    ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(16)]
    here = [c.shard_of(s, 4) for s in ids]
    code = f"from classpulse import contracts as c; print([c.shard_of(s, 4) for s in {ids!r}])"
    for seed in ("1", "2"):  # Python's own str hash differs per process; the rule must not
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out.strip() == str(here)
    assert set(here) == {0, 1, 2, 3}  # CRC-32 spreads even consecutive ids


def test_owned_shards_setting_and_command_line(monkeypatch):
    assert Settings(stream_shards=4).owned_shards == [0, 1, 2, 3]
    assert Settings(stream_shards=4, stream_shards_owned="2, 0").owned_shards == [0, 2]
    with pytest.raises(ValueError, match="out of range"):
        Settings(stream_shards=2, stream_shards_owned="3")
    with pytest.raises(ValueError, match="shard numbers"):
        Settings(stream_shards=2, stream_shards_owned="a")
    from classpulse.cli import build_parser
    from classpulse.cli.services import settings_from

    args = build_parser().parse_args(["worker", "--shards", "1,3"])
    monkeypatch.setenv("CLASSPULSE_STREAM_SHARDS", "4")
    assert settings_from(args).owned_shards == [1, 3]


# --- sessions spread over four shards --------------------------------------------------------
def sessions_on_every_shard(engine, shards: int, per_shard: int = 2) -> list[tuple[str, str]]:
    """(session id, student id) pairs: ``per_shard`` sessions of one student on each shard."""
    want = Counter({k: per_shard for k in range(shards)})
    out = []
    with Session(engine) as db:
        teacher = User(email="shards@school.example", password_hash="x", role="teacher")
        db.add(teacher)
        db.flush()
        while want:
            sid = uuid.uuid4()
            k = c.shard_of(str(sid), shards)
            if not want[k]:
                continue
            want[k] -= 1
            if not want[k]:
                del want[k]
            db.add(
                ClassSession(
                    id=sid, owner_id=teacher.id, title="S", join_code=uuid.uuid4().hex[:8].upper()
                )
            )
            db.flush()
            student = Student(session_id=sid, display_name="Ada")
            db.add(student)
            db.flush()
            out.append((str(sid), str(student.id)))
        db.commit()
    return out


def add(r: redis.Redis, session: str, student: str, seq: int, shards: int, data: bytes, **kw):
    stream = c.frames_stream(c.shard_of(session, shards), shards)
    fields = {
        c.F_VERSION: b"1",
        c.F_SESSION: session,
        c.F_STUDENT: student,
        c.F_SEQ: str(seq),
        c.F_RECEIVED_MS: str(time.time() * 1000),
        c.F_EMOTION: b"1",
        c.F_JPEG: data,
    }
    return r.xadd(stream, fields, **kw)


def per_student_frames(engine) -> Counter[str]:
    counts: Counter[str] = Counter()
    for b in buckets(engine):
        counts[str(b.student_id)] += b.frames
    return counts


def test_workers_and_an_aggregator_consume_every_shard_exactly_once(
    settings, clean_redis, engine, pipeline
):
    r = clean_redis
    settings = settings.model_copy(update={"stream_shards": 4})
    pairs = sessions_on_every_shard(engine, 4)
    data = jpeg()
    # The same entry id on two shards (ids are unique per stream only): both must count.
    add(r, pairs[0][0], pairs[0][1], 0, 4, data, id="1-1")
    other = next(p for p in pairs if c.shard_of(p[0], 4) != c.shard_of(pairs[0][0], 4))
    add(r, other[0], other[1], 0, 4, data, id="1-1")
    sent: Counter[str] = Counter({pairs[0][1]: 1, other[1]: 1})
    workers = [InferenceWorker(settings, r, pipeline) for _ in range(2)]
    agg = Aggregator(settings, r, engine)
    for i, x in enumerate([*workers, agg]):
        x.name = f"{x.name}-{i}"
    with loops_running([*workers, agg], join_s=15):
        time.sleep(0.5)
        for seq in range(1, 6):
            for session, student in pairs:
                add(r, session, student, seq, 4, data)
                sent[student] += 1
        wait_for_frames(engine, sum(sent.values()), timeout_s=60)
        time.sleep(0.5)  # a replay, were there one, would land now
    assert per_student_frames(engine) == sent  # every result exactly once, per student
    assert stats(r)["aggregator.applied"] == sum(sent.values())
    for k in range(4):
        frames_key, results_key = c.frames_stream(k, 4), c.results_stream(k, 4)
        assert r.xpending(frames_key, c.WORKER_GROUP)["pending"] == 0
        assert r.xpending(results_key, c.AGGREGATOR_GROUP)["pending"] == 0
        # Results stay on their session's shard: as many were added to it as its sessions'
        # students sent; each was deleted once stored.
        expected = sum(
            n
            for (sess, st) in pairs
            for who, n in sent.items()
            if who == st and c.shard_of(sess, 4) == k
        )
        assert expected and r.xinfo_stream(results_key)["entries-added"] == expected
        assert r.xlen(results_key) == 0
    assert not r.exists(c.FRAMES_STREAM) and not r.exists(c.RESULTS_STREAM)


def test_a_worker_and_an_aggregator_owning_some_shards_consume_only_those(
    settings, clean_redis, engine, pipeline
):
    r = clean_redis
    four = settings.model_copy(update={"stream_shards": 4})
    pairs = sessions_on_every_shard(engine, 4, per_shard=1)
    data = jpeg()
    for session, student in pairs:
        add(r, session, student, 1, 4, data)
    worker = InferenceWorker(four.model_copy(update={"stream_shards_owned": "0,2"}), r, pipeline)
    worker.setup()
    assert worker.frames_streams == ["cp:frames:{0}", "cp:frames:{2}"]
    done = 0
    while parts := worker.read():
        for stream, entries in parts:
            assert stream in worker.frames_streams
            done += worker.process(entries, stream)
    assert done == 2
    assert [r.xlen(s) for s in c.results_streams(4)] == [1, 0, 1, 0]
    # Shards 1 and 3 untouched: no consumer group there yet, nothing read.
    for k in (1, 3):
        assert not r.xinfo_groups(c.frames_stream(k, 4))
    # An aggregator owning shard 2 folds shard 2's result only, and acknowledges it there.
    agg = Aggregator(four.model_copy(update={"stream_shards_owned": "2"}), r, engine)
    assert agg.results_streams == ["cp:results:{2}"]
    from classpulse.streams import ensure_groups

    ensure_groups(r, c.results_streams(4), c.AGGREGATOR_GROUP)
    while parts := agg.read():
        agg.handle_parts(parts)
    on_two = next(st for s, st in pairs if c.shard_of(s, 4) == 2)
    assert per_student_frames(engine) == Counter({on_two: 1})
    assert r.xpending(c.results_stream(2, 4), c.AGGREGATOR_GROUP)["pending"] == 0
    info = {g["name"].decode(): g for g in r.xinfo_groups(c.results_stream(0, 4))}
    assert info["aggregators"]["lag"] == 1  # shard 0's result waits for its own aggregator


async def test_the_gateway_sink_writes_each_session_to_its_shard(settings, clean_redis):
    redis = Redis.from_url(settings.redis_url)
    sink = FrameSink(redis, maxlen=100, shards=4)
    sink.start()
    sessions = [str(uuid.uuid4()) for _ in range(12)]
    written: list[str | None] = []
    for s in sessions:
        assert sink.offer(s, "u", 1, b"jpeg", "per_student", written.append) is None
    for _ in range(100):
        if len(written) == len(sessions):
            break
        await asyncio.sleep(0.02)
    await sink.stop()
    assert written == [None] * len(sessions)
    for k in range(4):
        got = [f[c.F_SESSION].decode() for _, f in clean_redis.xrange(c.frames_stream(k, 4))]
        assert sorted(got) == sorted(s for s in sessions if c.shard_of(s, 4) == k)
    assert not clean_redis.exists(c.FRAMES_STREAM)
    await redis.aclose()


def test_metrics_report_every_shards_backlog(settings, clean_redis):
    from tests.gateway_helpers import client_for

    two = settings.model_copy(update={"stream_shards": 2})
    from classpulse.streams import ensure_groups

    ensure_groups(clean_redis, c.frames_streams(2), c.WORKER_GROUP)
    clean_redis.xadd(c.frames_stream(1, 2), {b"x": b"1"})
    with client_for(two) as client:
        text = client.get("/metrics").text
    assert 'classpulse_stream_length{group="workers",stream="cp:frames:{1}"} 1.0' in text
    assert 'classpulse_stream_lag{group="workers",stream="cp:frames:{1}"} 1.0' in text
    assert 'classpulse_stream_pending{group="workers",stream="cp:frames:{0}"} 0.0' in text


def test_one_model_call_for_a_batch_of_several_shards(settings, clean_redis, engine, pipeline):
    r = clean_redis
    four = settings.model_copy(update={"stream_shards": 4})
    pairs = sessions_on_every_shard(engine, 4, per_shard=1)
    data = jpeg()
    for session, student in pairs:
        add(r, session, student, 1, 4, data)
    worker = InferenceWorker(four, r, pipeline)
    worker.setup()
    calls = []
    analyze = worker.pipeline.analyze

    def counting(images, **kw):
        calls.append(len(images))
        return analyze(images, **kw)

    worker.pipeline.analyze = counting  # type: ignore[method-assign]
    try:
        parts = worker.read()
        assert len(parts) == 4  # one XREADGROUP over the four shards
        assert worker.process_parts(parts) == 4
        # Entries read together without their streams (read_batch): each one's shard from its
        # session.
        for session, student in pairs:
            add(r, session, student, 2, 4, data)
        assert worker.process(worker.read_batch()) == 4
    finally:
        worker.pipeline.analyze = analyze  # type: ignore[method-assign]
    assert calls == [4, 4]  # every shard's frames in one model call
    for k in range(4):
        assert r.xpending(c.frames_stream(k, 4), c.WORKER_GROUP)["pending"] == 0
        ids = [
            c.result_decoder.decode(f[c.R_DATA]).frame_id
            for _, f in r.xrange(c.results_stream(k, 4))
        ]
        assert len(ids) == 2 and all(i.endswith(f"@{k}") for i in ids)


def test_a_gateway_warns_when_the_workers_use_another_shard_count(
    settings, clean_redis, pipeline, caplog
):
    from app.frame_flow import FrameFlow

    InferenceWorker(settings.model_copy(update={"stream_shards": 4}), clean_redis, pipeline).setup()
    published = clean_redis.hget(c.MODEL_INFO_KEY, "stream_shards")
    assert published == b"4"
    flow = FrameFlow(None, settings.model_copy(update={"stream_shards": 2}))  # type: ignore[arg-type]
    with caplog.at_level("WARNING", logger="app.frame_flow"):
        flow.check_shards(published)
        flow.check_shards(published)  # once per change, not every second
        flow.check_shards(b"2")  # the same as this gateway's: fine
    warnings = [r for r in caplog.records if "CLASSPULSE_STREAM_SHARDS=4" in r.getMessage()]
    assert len(warnings) == 1


def test_a_worker_survives_a_shard_deleted_while_it_waits(settings, clean_redis, pipeline):
    r = clean_redis
    two = settings.model_copy(update={"stream_shards": 2})
    session = next(s for s in (str(uuid.uuid4()) for _ in range(100)) if c.shard_of(s, 2) == 1)
    worker = InferenceWorker(two, r, pipeline)
    with loops_running([worker], join_s=10) as (thread,):
        time.sleep(0.5)  # blocked in XREADGROUP on both shards
        r.delete(c.frames_stream(1, 2))  # Redis 7 answers the blocked read with UNBLOCKED
        time.sleep(0.3)
        deadline = time.time() + 20
        while time.time() < deadline and not r.xlen(c.results_stream(1, 2)):
            with contextlib.suppress(redis.ResponseError):
                add(r, session, str(uuid.uuid4()), 1, 2, jpeg())
            time.sleep(0.5)
        assert thread.is_alive()
    assert r.xlen(c.results_stream(1, 2)) >= 1  # the group was made again and the frame read
