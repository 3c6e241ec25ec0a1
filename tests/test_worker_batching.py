"""The worker's per-read work (worker/batch.py, issue 21): the packed crops of a whole read
un-filtered in one pass, the withdrawn flags and the policy in one round trip, and the results,
acknowledgements and counters in one atomic script call that writes results before it
acknowledges, with the real models and a real Redis."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import redis

from classpulse import contracts as c
from classpulse import edge_wire
from classpulse.policy import Policy, write_mirror
from tests import pipeline_helpers
from tests import stream_helpers as streams
from tests.edge_helpers import faces_message, now_ms, parity_clip
from tests.pipeline_helpers import InferenceWorker
from tests.stream_helpers import stats
from worker.batch import WriteBatch, lookups, unfilter_rows, write_script
from worker.pipeline import decode_jpeg

pipeline = streams.pipeline  # the models, loaded once per module
classify_calls = pipeline_helpers.classify_calls  # the emotion model's calls, counted

SESSION = "00000000-0000-0000-0000-00000000aaaa"
STUDENTS = [f"00000000-0000-0000-0000-{k:012d}" for k in range(1, 5)]


def add(r: redis.Redis, student: str, seq: int, fields: dict, age_ms: float = 0.0) -> bytes:
    """A frames stream entry as the gateway writes it."""
    return r.xadd(
        c.FRAMES_STREAM,
        {
            c.F_VERSION: b"1",
            c.F_SESSION: SESSION,
            c.F_STUDENT: student,
            c.F_SEQ: str(seq),
            c.F_RECEIVED_MS: str(now_ms() - age_ms),
            c.F_EMOTION: b"1",
            c.F_MODE: b"per_student",
            **fields,
        },
    )


def faces(r: redis.Redis, student: str, seq: int, data: bytes, age_ms: float = 0.0) -> bytes:
    return add(r, student, seq, {c.F_KIND: c.KIND_FACES, c.F_FACES: data}, age_ms)


def results(r: redis.Redis) -> dict[int, c.FrameResult]:
    decoded = [c.result_decoder.decode(f[c.R_DATA]) for _, f in r.xrange(c.RESULTS_STREAM)]
    return {x.seq: x for x in decoded}


def read_all(worker: InferenceWorker) -> list[tuple[str, list]]:
    """Every new entry in one read, as the worker's loop gets a read."""
    worker.setup()
    return worker.read_new(1000, None)


@pytest.mark.parametrize("n", [1, 7, 8, 33])
@pytest.mark.parametrize("side", [48, 64])
def test_unfilter_rows_is_a_running_sum_per_row_modulo_256(n, side):
    """The column pass (8 crops and more) and numpy's cumsum (fewer) both undo the pages'
    "Sub" filter exactly, wrapping modulo 256."""
    rng = np.random.default_rng(n * side)
    pixels = rng.integers(0, 256, (n, side, side), dtype=np.uint8)
    pixels[0, 0, :] = 255  # long carries: every difference wraps
    filtered = np.frombuffer(edge_wire.sub_filter(pixels.tobytes(), side), np.uint8)
    out = unfilter_rows(filtered.reshape(n, side, side))
    assert out.shape == (n, side, side) and out.dtype == np.uint8
    assert np.array_equal(out, pixels)


def test_a_read_of_packed_and_raw_messages_classifies_what_the_pages_cut(
    settings, clean_redis, pipeline, classify_calls
):
    """Twenty faces messages in one read, packed and not, with zero, one or two faces: one
    classifier call for the read, and each face's probabilities those of the JPEG path (each
    frame got its own crops back from the read's un-filter pass)."""
    r = clean_redis
    clip = parity_clip(frames=20)
    jpegs = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes() for f in clip]
    expected = [pipeline.analyze([decode_jpeg(j)])[0][0] for j in jpegs]
    for seq, jpeg in enumerate(jpegs):
        faces(r, STUDENTS[seq % 4], seq, faces_message(pipeline, jpeg, packed=seq % 3 != 0))
    classify_calls.clear()
    worker = InferenceWorker(settings, r, pipeline)
    parts = read_all(worker)
    assert worker.process_safely(parts) == 20
    n_faces = sum(len(e) for e in expected)
    assert classify_calls == [n_faces] and n_faces >= 20  # the clip has frames with two people
    got = results(r)
    for seq, want in enumerate(expected):
        assert len(got[seq].faces) == len(want)
        for face, ref in zip(got[seq].faces, want, strict=True):
            probs = [face.probs[k] for k in pipeline.labels]
            assert np.allclose(probs, ref.probs, atol=1e-5), seq
    assert r.xlen(c.FRAMES_STREAM) == 0  # acknowledged and deleted with the results
    assert r.xpending(c.FRAMES_STREAM, c.WORKER_GROUP)["pending"] == 0


def test_one_read_keeps_every_rule_per_entry(settings, clean_redis, pipeline):
    """Withdrawn, malformed, stale, a packed and a raw message in one read under a mirrored
    policy stricter than the stamp: each entry gets its own fate, counted per reason and per
    student, every entry acknowledged and deleted in the same write."""
    r = clean_redis
    jpeg = streams.jpeg()
    write_mirror(r, Policy(emotion_mode="aggregate_only"), 1)
    r.set(c.withdrawn_key(STUDENTS[3]), "1")
    faces(r, STUDENTS[0], 1, faces_message(pipeline, jpeg))  # packed
    faces(r, STUDENTS[1], 2, faces_message(pipeline, jpeg, packed=False))
    faces(r, STUDENTS[2], 3, b"CPFM broken")  # malformed
    faces(r, STUDENTS[2], 4, faces_message(pipeline, jpeg), age_ms=settings.frame_max_age_ms + 1)
    faces(r, STUDENTS[3], 5, faces_message(pipeline, jpeg))  # withdrawn
    worker = InferenceWorker(settings, r, pipeline)
    assert worker.process_safely(read_all(worker)) == 2
    got = results(r)
    assert sorted(got) == [1, 2]
    assert {x.mode for x in got.values()} == {"aggregate_only"}
    assert np.allclose(
        [got[1].faces[0].probs[k] for k in pipeline.labels],
        [got[2].faces[0].probs[k] for k in pipeline.labels],
        atol=1e-6,
    )
    counts = stats(r)
    assert counts["worker.processed"] == 2 and counts["worker.faces"] == 2
    assert counts["worker.dropped.malformed"] == 1 and counts["worker.dropped.stale"] == 1
    assert counts["worker.dropped.withdrawn"] == 1
    per_student = r.hgetall(c.stream_stats_key(SESSION))
    assert per_student[STUDENTS[0].encode() + b":processed"] == b"1"
    assert per_student[STUDENTS[2].encode() + b":dropped.stale"] == b"1"
    assert r.ttl(c.stream_stats_key(SESSION)) > 0 and r.ttl(c.WORKER_LAG_KEY) > 0
    assert r.hget(c.WORKER_LAG_KEY, worker.name) is not None
    assert r.xlen(c.FRAMES_STREAM) == 0


def test_lookups_reads_withdrawals_and_the_policy_together(clean_redis):
    r = clean_redis
    entries = [(b"1-1", {c.F_STUDENT: s.encode()}) for s in STUDENTS[:3]]
    assert lookups(r, entries) == (set(), None)  # nobody withdrew, no mirror
    r.set(c.withdrawn_key(STUDENTS[1]), "1")
    write_mirror(r, Policy(emotion_mode="off"), 3)
    withdrawn, mirror = lookups(r, entries + [(b"1-2", {})])
    assert withdrawn == {STUDENTS[1].encode()}
    assert mirror is not None and mirror.emotion_mode == "off"
    assert lookups(r, [(b"1-3", {})])[0] == set()  # no student field: no flags to read


def one_read_of_faces(settings, r, pipeline, n: int):
    """A worker and its read of one faces message from each of the first ``n`` students."""
    jpeg = streams.jpeg()
    for seq in range(n):
        faces(r, STUDENTS[seq], seq, faces_message(pipeline, jpeg))
    worker = InferenceWorker(settings, r, pipeline)
    return worker, read_all(worker)


def test_a_failed_result_write_acknowledges_nothing(settings, clean_redis, pipeline):
    """The write script stops at the first failing command and writes results before it
    acknowledges: if a result cannot be written, the read's entries stay pending (and are
    reclaimed later, then written once), where a MULTI/EXEC would have acknowledged them."""
    r = clean_redis
    worker, parts = one_read_of_faces(settings, r, pipeline, 3)
    r.set(c.RESULTS_STREAM, "not a stream")  # every XADD to it fails (WRONGTYPE)
    with pytest.raises(redis.ResponseError):
        worker.process_safely(parts)
    assert r.xpending(c.FRAMES_STREAM, c.WORKER_GROUP)["pending"] == 3
    assert r.xlen(c.FRAMES_STREAM) == 3 and r.hgetall(c.STATS_KEY) == {}
    r.delete(c.RESULTS_STREAM)
    worker.reclaim_idle_ms, worker._last_reclaim = 1, 0.0
    assert worker.process_safely(worker.read()) == 3
    assert sorted(results(r)) == [0, 1, 2]
    assert r.xpending(c.FRAMES_STREAM, c.WORKER_GROUP)["pending"] == 0


def test_an_entry_that_cannot_be_processed_is_dropped_counted_and_deleted(
    settings, clean_redis, pipeline, monkeypatch
):
    """When a read fails, and then each entry alone, every entry is acknowledged, deleted and
    counted as an error in one write: never left pending to fail again after a reclaim."""
    r = clean_redis
    worker, parts = one_read_of_faces(settings, r, pipeline, 2)

    def broken(parts):
        raise RuntimeError("poisonous")

    monkeypatch.setattr(worker, "process_parts", broken)
    assert worker.process_safely(parts) == 0
    assert r.xlen(c.FRAMES_STREAM) == 0
    assert r.xpending(c.FRAMES_STREAM, c.WORKER_GROUP)["pending"] == 0
    assert stats(r)["worker.dropped.error"] == 2
    per_student = r.hgetall(c.stream_stats_key(SESSION))
    assert per_student[STUDENTS[1].encode() + b":dropped.error"] == b"1"


def command_names(packed: bytes) -> list[bytes]:
    """The name of each command in ``packed``: RESP arrays of bulk strings, as redis-py packs
    them (``*n``, then ``$len`` and the bytes for each of the n parts, the first the name)."""
    names, at = [], 0
    while at < len(packed):
        end = packed.index(b"\r\n", at)
        assert packed[at : at + 1] == b"*", packed[at:]
        parts, at = int(packed[at + 1 : end]), end + 2
        for k in range(parts):
            end = packed.index(b"\r\n", at)
            size, at = int(packed[at + 1 : end]), end + 2
            if k == 0:
                names.append(packed[at : at + size].upper())
            at += size + 2
    return names


def sent_commands(r: redis.Redis, monkeypatch) -> list[bytes]:
    """The names of the commands ``r``'s connections send from now on, in order, as they go on
    the wire (a pipeline's commands one by one). Filled until the test ends."""
    sent: list[bytes] = []
    cls = r.connection_pool.connection_class
    real = cls.send_packed_command

    def spy(self, command, *args, **kwargs):
        packed = command if isinstance(command, bytes | str) else b"".join(command)
        sent.extend(command_names(packed.encode() if isinstance(packed, str) else packed))
        return real(self, command, *args, **kwargs)

    monkeypatch.setattr(cls, "send_packed_command", spy)
    return sent


def test_write_batch_groups_by_key_and_sends_nothing_when_empty(clean_redis, monkeypatch):
    r = clean_redis
    script = write_script(r)
    sent = sent_commands(r, monkeypatch)
    WriteBatch(script).execute()  # nothing queued: no round trip at all
    assert sent == []
    batch = WriteBatch(script)
    for k in range(3):
        batch.xadd("s:a", b"data", f"blob{k}".encode(), 1000)
    batch.xadd("s:b", b"data", b"other", 1000)
    batch.hincrby("h", "x", 2)
    batch.hincrby("h", b"y", 1)
    batch.hincrby("h", "x", 3)
    batch.hset("lag", "w", "12 1.0")
    batch.expire("h", 60)
    batch.execute()
    # One script call (the spy sees it): SCRIPT LOAD and a second EVALSHA only if Redis lost it.
    assert sent in ([b"EVALSHA"], [b"EVALSHA", b"SCRIPT", b"EVALSHA"])
    assert [f[b"data"] for _, f in r.xrange("s:a")] == [b"blob0", b"blob1", b"blob2"]
    assert r.xlen("s:b") == 1 and r.hget("lag", "w") == b"12 1.0"
    assert r.hgetall("h") == {b"x": b"5", b"y": b"1"} and 0 < r.ttl("h") <= 60
