"""The frame writer's linger on a real Redis: under load, frames share pipelines; each ack still
means "stored in the stream", in order; a frame after a quiet spell is not held back."""

from __future__ import annotations

import asyncio
import random
import struct
import time

import redis as sync_redis
from redis.asyncio import Redis

from app.frame_sink import FrameSink
from classpulse import contracts, edge_wire


def _last_seq(client: sync_redis.Redis) -> int:
    entries = client.xrevrange(contracts.FRAMES_STREAM, count=1)
    return int(entries[0][1][contracts.F_SEQ]) if entries else 0


async def test_frames_under_load_share_pipelines_and_ack_once_stored(redis_url, clean_redis):
    redis = Redis.from_url(redis_url)
    sink = FrameSink(redis, maxlen=10_000, linger_s=0.02)
    sink.start()
    acked: list[tuple[int, str | None, int]] = []  # (seq, reason, the stream's last seq then)

    def done(seq: int):
        # Called by the writer: the entry must already be in the stream when the page is told.
        return lambda reason: acked.append((seq, reason, _last_seq(clean_redis)))

    total = 60
    for seq in range(1, total + 1):  # one frame every 2 ms: ten per linger
        assert sink.offer("s", "u", seq, b"faces", "per_student", done(seq)) is None
        await asyncio.sleep(0.002)
    for _ in range(200):
        if len(acked) == total:
            break
        await asyncio.sleep(0.01)
    await sink.stop()

    assert [seq for seq, _, _ in acked] == list(range(1, total + 1))  # acked in order, once
    assert all(reason is None for _, reason, _ in acked)
    assert all(stored >= seq for seq, _, stored in acked)  # acked only once stored
    entries = clean_redis.xrange(contracts.FRAMES_STREAM)
    assert [int(f[contracts.F_SEQ]) for _, f in entries] == list(range(1, total + 1))
    # 60 frames over ~120 ms with a 20 ms linger: a handful of round trips, not 60.
    assert sink.writes <= total // 4, sink.writes
    await redis.aclose()


async def test_a_frame_after_a_quiet_spell_is_written_at_once(redis_url, clean_redis):
    redis = Redis.from_url(redis_url)
    linger = 0.4
    sink = FrameSink(redis, maxlen=100, linger_s=linger)
    sink.start()

    async def one(seq: int) -> float:
        got = asyncio.Event()
        t0 = time.monotonic()
        assert sink.offer("s", "u", seq, b"x", "per_student", lambda _r: got.set()) is None
        await asyncio.wait_for(got.wait(), 5)
        return time.monotonic() - t0

    await asyncio.sleep(linger)  # quiet: nothing written for a linger
    assert await one(1) < linger / 2  # not held back
    # Right after a write: frames are arriving faster than one per linger, so it waits (at most
    # the linger) to share the next round trip.
    second = await one(2)
    assert linger / 2 < second < linger + 0.3
    await sink.stop()
    assert [int(f[contracts.F_SEQ]) for _, f in clean_redis.xrange(contracts.FRAMES_STREAM)] == [
        1,
        2,
    ]
    await redis.aclose()


def _reason(fn, data: bytes) -> str | None:
    try:
        fn(data, 2, 64, True)
    except edge_wire.WireError as exc:
        return exc.reason
    return None


def test_check_refuses_what_parse_refuses_with_the_same_reason():
    """The gateway runs ``edge_wire.check`` (no face objects built); the worker runs ``parse``.
    Crafted values in every field of the face records: same verdict, same reason."""
    rng = random.Random(21)
    points = [(120, 130), (170, 130), (150, 160), (150, 190), (105, 140), (215, 140)]
    faces = [((100, 100, 120, 140), 0.9, points), ((300, 120, 90, 100), 0.8, points)]
    crops = bytes(rng.randrange(256) for _ in range(2 * 64 * 64))
    good = edge_wire.encode(640, 480, faces, crops=crops, crop_size=64, packed=True)
    assert _reason(edge_wire.check, good) is None
    specials = [float("nan"), float("inf"), -1.0, 2.0, -500.0, 700.0, 95.0, 0.0]
    seen = set()
    for _ in range(3000):
        data = bytearray(good)
        for _ in range(rng.choice((1, 2))):  # one or two floats of the face records replaced
            at = edge_wire.HEADER_SIZE + 4 * rng.randrange(2 * edge_wire.FACE.size // 4)
            struct.pack_into("<f", data, at, rng.choice(specials))
        reason = _reason(edge_wire.parse, bytes(data))
        assert _reason(edge_wire.check, bytes(data)) == reason
        seen.add(reason)
    assert {None, edge_wire.BAD_VALUE, edge_wire.BAD_BOX} <= seen
