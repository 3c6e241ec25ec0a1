"""The aggregator's flushes (aggregator/service.py): while the results stream has a backlog,
several reads are folded in one transaction, each bucket written once; nothing is acknowledged
before the commit that applied it; a result written twice into one flush counts once; and one
live update per student per flush carries the same state as folding the results one by one."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime

import msgspec
import numpy as np
import pytest
import redis
from sqlalchemy.exc import OperationalError

import aggregator.service as aggregator_module
from aggregator.service import FLUSH_MAX_RESULTS, READ_COUNT
from classpulse import contracts as c
from classpulse.policy import Policy, write_mirror
from classpulse.streams import ensure_group
from tests.db_helpers import sql
from tests.pipeline_helpers import Aggregator
from tests.stream_helpers import push

LABELS = ("happy", "sad", "neutral")


def result(roster, who: str, k: int, t_ms: float, happy: float = 0.7, yaw: float | None = None):
    rest = (1 - happy) / 2
    face = c.Face((10, 10, 100, 100), 0.9, dict(zip(LABELS, (happy, rest, rest), strict=True)))
    if yaw is not None:
        face.yaw, face.pitch = yaw, 0.0
    return c.FrameResult(
        frame_id=f"{k + 1}-{uuid.uuid4().hex[:8]}",
        session_id=roster["session"],
        student_id=roster[who],
        seq=k,
        received_ms=t_ms,
        processed_ms=t_ms,
        width=320,
        height=240,
        faces=[face],
        models={},
        timings_ms={},
    )


def bucket_t0(settings) -> float:
    """A receive time at the start of the current bucket, in ms (all results in one bucket)."""
    size = settings.bucket_seconds
    return time.time() // size * size * 1000


def aggregator(settings, r, engine, attention: bool = False) -> Aggregator:
    write_mirror(r, Policy("per_student", attention=attention), 1)
    ensure_group(r, c.RESULTS_STREAM, c.AGGREGATOR_GROUP)
    agg = Aggregator(settings, r, engine)
    agg._pending_own = False  # noqa: SLF001 (a fresh consumer: nothing of its own pending)
    return agg


def pending(r) -> int:
    return r.xpending(c.RESULTS_STREAM, c.AGGREGATOR_GROUP)["pending"]


def stored(settings) -> list[tuple]:
    return sql(
        settings,
        "SELECT student_id::text, bucket_start, frames FROM emotion_buckets ORDER BY 1, 2",
    )


def test_a_backlog_is_folded_in_flushes_of_several_reads(settings, clean_redis, engine, roster):
    t0 = bucket_t0(settings)
    n = 3 * READ_COUNT + 7
    push(clean_redis, [result(roster, ("ada", "bo")[k % 2], k, t0 + k) for k in range(n)])
    agg = aggregator(settings, clean_redis, engine)
    parts = agg.read()
    got = sum(len(entries) for _, entries in parts)
    assert READ_COUNT < got <= FLUSH_MAX_RESULTS, "a full read did not pull the next one in"
    assert pending(clean_redis) == got  # read, not acknowledged yet
    assert agg.handle_parts(parts) == got
    assert pending(clean_redis) == 0
    while more := agg.read():
        agg.handle_parts(more)
    bucket = datetime.fromtimestamp(t0 / 1000, UTC)
    # Two students, one bucket each: one row each, every frame counted once.
    assert stored(settings) == sorted(
        [(roster["ada"], bucket, (n + 1) // 2), (roster["bo"], bucket, n // 2)]
    )


def test_a_flush_gathers_what_arrives_while_it_lingers(settings, clean_redis, engine, roster):
    t0 = bucket_t0(settings)
    push(clean_redis, [result(roster, "ada", k, t0 + k) for k in range(10)])
    agg = aggregator(settings.model_copy(update={"aggregator_linger_ms": 300}), clean_redis, engine)
    # Results streaming in (the last flush read 10 in 10 ms), and a flush just ended.
    agg._rate, agg._read_ended = 1000.0, time.monotonic()  # noqa: SLF001
    late = threading.Timer(0.1, push, (clean_redis, [result(roster, "bo", 10, t0 + 10)]))
    late.start()
    started = time.monotonic()
    parts = agg.read()
    late.join()
    # The result written 100 ms into the flush joined it; the flush ended at its linger.
    assert sum(len(entries) for _, entries in parts) == 11
    assert 0.25 <= time.monotonic() - started < 1.0
    assert agg.handle_parts(parts) == 11


def test_a_flush_does_not_linger_at_a_low_rate_or_after_a_quiet_spell(
    settings, clean_redis, engine, roster
):
    t0 = bucket_t0(settings)
    agg = aggregator(settings.model_copy(update={"aggregator_linger_ms": 300}), clean_redis, engine)
    for rate, ended in ((100.0, time.monotonic()), (1000.0, time.monotonic() - 5)):
        agg._rate, agg._read_ended = rate, ended  # noqa: SLF001
        push(clean_redis, [result(roster, "ada", k, t0 + k) for k in range(3)])
        started = time.monotonic()
        parts = agg.read()
        assert time.monotonic() - started < 0.2, (rate, "waited for more")
        assert agg.handle_parts(parts) == 3


def test_without_linger_a_read_that_is_not_full_is_its_own_flush(
    settings, clean_redis, engine, roster
):
    t0 = bucket_t0(settings)
    push(clean_redis, [result(roster, "ada", k, t0 + k) for k in range(10)])
    agg = aggregator(settings.model_copy(update={"aggregator_linger_ms": 0}), clean_redis, engine)
    parts = agg.read()
    assert sum(len(entries) for _, entries in parts) == 10
    push(clean_redis, [result(roster, "ada", 10, t0 + 10)])  # arrives after: the next flush
    assert agg.handle_parts(parts) == 10
    assert agg.handle_parts(agg.read()) == 1


def test_nothing_is_acknowledged_before_the_commit_that_applied_it(
    settings, clean_redis, engine, roster, monkeypatch
):
    t0 = bucket_t0(settings)
    n = READ_COUNT + 50
    push(clean_redis, [result(roster, ("ada", "bo")[k % 2], k, t0 + k) for k in range(n)])
    agg = aggregator(settings, clean_redis, engine)
    parts = agg.read()
    assert sum(len(entries) for _, entries in parts) == n

    def database_gone(*_args, **_kw):  # PostgreSQL failing in the middle of the transaction
        raise OperationalError("INSERT ...", {}, Exception("server closed the connection"))

    monkeypatch.setattr(aggregator_module, "write_buckets", database_gone)
    with pytest.raises(OperationalError):
        agg.handle_parts(parts)
    assert pending(clean_redis) == n  # nothing acknowledged
    assert sql(settings, "SELECT count(*) FROM applied_results") == [(0,)]  # rolled back
    monkeypatch.undo()
    assert agg.handle_parts(parts) == n  # the loop retries the same flush as is
    assert pending(clean_redis) == 0
    assert sum(frames for *_, frames in stored(settings)) == n
    assert agg.handle_parts(parts) == 0  # a replay of it (acknowledgement lost): nothing again
    assert sum(frames for *_, frames in stored(settings)) == n


def test_a_result_written_twice_into_one_flush_counts_once(settings, clean_redis, engine, roster):
    t0 = bucket_t0(settings)
    twice = result(roster, "ada", 0, t0)
    push(clean_redis, [twice, result(roster, "bo", 1, t0 + 1), twice])  # a worker's retry
    agg = aggregator(settings, clean_redis, engine)
    assert agg.handle_parts(agg.read()) == 2
    assert sum(frames for *_, frames in stored(settings)) == 2


def test_one_live_update_per_student_per_flush_as_if_folded_one_by_one(
    settings, clean_redis, engine, roster
):
    t0 = bucket_t0(settings)
    happy = [0.9, 0.2, 0.6, 0.8, 0.4, 0.7, 0.95, 0.1]
    yaws = [0.0, 60.0, 60.0, 0.0, 70.0, 0.0, 65.0, 65.0]  # facing, then away now and then
    results = [
        result(roster, who, k, t0 + 250 * k, happy=h, yaw=y)
        for k, (h, y) in enumerate(zip(happy, yaws, strict=True))
        for who in ("ada", "bo")
    ]
    push(clean_redis, results)
    agg = aggregator(settings, clean_redis, engine, attention=True)
    sub = clean_redis.pubsub()
    sub.subscribe(c.live_channel(roster["session"]))
    sub.get_message(timeout=1)  # the subscription's confirmation
    assert agg.handle_parts(agg.read()) == len(results)
    published = []
    while msg := sub.get_message(timeout=0.5):
        published.append(msgspec.json.decode(msg["data"]))
    sub.close()
    students = [m["student_id"] for m in published if m.get("type") == "student"]
    assert sorted(students) == sorted([roster["ada"], roster["bo"]])  # one each

    # The reference: each result folded and turned into an update one by one.
    ref = Aggregator(settings, clean_redis, engine)
    expected = {}
    for res in results:
        expected[res.student_id] = ref.live_update(
            msgspec.json.decode(msgspec.json.encode(res), type=c.FrameResult)
        )
    snapshot = clean_redis.hgetall(c.snapshot_key(roster["session"]))
    fields = ("emotion", "confidence", "probs", "quality", "facing", "facing_share", "away_s")
    for who in ("ada", "bo"):
        got = c.live_decoder.decode(snapshot[roster[who].encode()])
        want = expected[roster[who]]
        assert [getattr(got, f) for f in fields] == [getattr(want, f) for f in fields]
        assert (got.frames, got.seq, got.received_ms) == (want.frames, want.seq, want.received_ms)
    # And the smoothing is numpy's, in plain floats.
    a = settings.smoothing_alpha
    p = None
    for h in happy:
        x = np.array([h, (1 - h) / 2, (1 - h) / 2])
        p = x if p is None else a * x + (1 - a) * p
    got = c.live_decoder.decode(snapshot[roster["ada"].encode()])
    assert got.probs == {k: round(float(v), 4) for k, v in zip(LABELS, p, strict=True)}
    assert got.facing is False and got.away_s is not None and got.facing_share == 0.375


def live_messages(sub) -> list[dict]:
    out = []
    while msg := sub.get_message(timeout=0.3):
        if msg["type"] == "message":
            out.append(msgspec.json.decode(msg["data"]))
    return out


def test_results_are_shown_at_once_and_stored_together_when_the_commit_is_due(
    settings, clean_redis, engine, roster
):
    t0 = bucket_t0(settings)
    agg = aggregator(
        settings.model_copy(update={"aggregator_commit_ms": 60_000}), clean_redis, engine
    )
    sub = clean_redis.pubsub()
    sub.subscribe(c.live_channel(roster["session"]))
    sub.get_message(timeout=1)
    for k in range(3):  # three flushes of two results each
        push(clean_redis, [result(roster, w, k, t0 + 10 * k) for w in ("ada", "bo")])
        assert agg.handle_parts(agg.read()) == 0  # not due: nothing stored yet
        shown = [m["student_id"] for m in live_messages(sub) if m.get("type") == "student"]
        assert sorted(shown) == sorted([roster["ada"], roster["bo"]])  # ...but shown at once
    assert stored(settings) == [] and pending(clean_redis) == 6  # nothing acknowledged
    agg.tick()  # not due yet
    assert pending(clean_redis) == 6
    agg.commit_s = 0.0  # now it is
    agg.tick()
    bucket = datetime.fromtimestamp(t0 / 1000, UTC)
    assert stored(settings) == sorted([(roster["ada"], bucket, 3), (roster["bo"], bucket, 3)])
    assert pending(clean_redis) == 0 and clean_redis.xlen(c.RESULTS_STREAM) == 0
    assert int(clean_redis.hget(c.STATS_KEY, "aggregator.applied")) == 6
    sub.close()


def test_a_withdrawn_or_erased_student_is_not_shown_and_a_replay_not_twice(
    settings, clean_redis, engine, roster
):
    t0 = bucket_t0(settings)
    agg = aggregator(
        settings.model_copy(update={"aggregator_commit_ms": 60_000}), clean_redis, engine
    )
    clean_redis.set(c.withdrawn_key(roster["bo"]), roster["session"])  # as the gateway sets it
    retried = result(roster, "ada", 0, t0)
    push(clean_redis, [retried, result(roster, "bo", 1, t0 + 1), retried])  # a worker's retry
    sub = clean_redis.pubsub()
    sub.subscribe(c.live_channel(roster["session"]))
    sub.get_message(timeout=1)
    agg.handle_parts(agg.read())
    push(clean_redis, [retried])  # again, in a later flush
    agg.handle_parts(agg.read())
    shown = [m for m in live_messages(sub) if m.get("type") == "student"]
    assert [m["student_id"] for m in shown] == [roster["ada"]]  # once, and Bo not at all
    assert shown[0]["frames"] == 1
    sub.close()


def test_a_failed_commit_keeps_results_held_and_a_retried_flush_is_not_held_twice(
    settings, clean_redis, engine, roster, monkeypatch
):
    t0 = bucket_t0(settings)
    push(clean_redis, [result(roster, w, 0, t0) for w in ("ada", "bo")])
    agg = aggregator(settings, clean_redis, engine)  # a commit per flush

    def database_gone(*_args, **_kw):
        raise OperationalError("INSERT ...", {}, Exception("server closed the connection"))

    monkeypatch.setattr(aggregator_module, "write_buckets", database_gone)
    parts = agg.read()
    for _ in range(2):  # the loop retries the same flush while PostgreSQL is away
        with pytest.raises(OperationalError):
            agg.handle_parts(parts)
    assert pending(clean_redis) == 2 and len(agg._held.results) == 2  # noqa: SLF001
    monkeypatch.undo()
    assert agg.handle_parts(parts) == 2
    assert sum(frames for *_, frames in stored(settings)) == 2 and pending(clean_redis) == 0


def test_what_is_held_is_committed_when_the_process_stops(settings, clean_redis, engine, roster):
    t0 = bucket_t0(settings)
    agg = aggregator(
        settings.model_copy(update={"aggregator_commit_ms": 60_000}), clean_redis, engine
    )
    push(clean_redis, [result(roster, "ada", k, t0 + k) for k in range(4)])
    assert agg.handle_parts(agg.read()) == 0
    assert pending(clean_redis) == 4
    agg.stopped()
    assert pending(clean_redis) == 0 and sum(f for *_, f in stored(settings)) == 4


def test_a_flush_whose_publish_failed_is_shown_when_retried(
    settings, clean_redis, engine, roster, monkeypatch
):
    t0 = bucket_t0(settings)
    push(clean_redis, [result(roster, "ada", 0, t0)])
    agg = aggregator(settings, clean_redis, engine)
    parts = agg.read()

    def redis_gone(*_args, **_kw):
        raise redis.ConnectionError("Connection closed by server.")

    monkeypatch.setattr(aggregator_module, "publish_class", redis_gone)  # mid-publish
    with pytest.raises(redis.ConnectionError):
        agg.handle_parts(parts)
    monkeypatch.undo()
    sub = clean_redis.pubsub()
    sub.subscribe(c.live_channel(roster["session"]))
    sub.get_message(timeout=1)
    assert agg.handle_parts(parts) == 1  # the loop retries the same flush
    shown = [m for m in live_messages(sub) if m.get("type") == "student"]
    assert [m["student_id"] for m in shown] == [roster["ada"]]
    sub.close()
