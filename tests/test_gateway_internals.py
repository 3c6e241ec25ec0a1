"""The frame writer and the live hub on a real Redis: bounded queues drop and say so."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from app import frame_sink
from app.frame_sink import FrameSink
from app.hub import DropOldestQueue, Hub
from classpulse import contracts


async def test_full_frame_queue_drops_instead_of_growing(settings, clean_redis):
    redis = Redis.from_url(settings.redis_url)
    sink = FrameSink(redis, maxlen=100)  # not started: nothing drains the queue
    reasons = [
        sink.offer("s", "u", i, b"jpeg", "per_student", lambda r: None)
        for i in range(frame_sink.QUEUE_SIZE + 3)
    ]
    assert reasons[: frame_sink.QUEUE_SIZE] == [None] * frame_sink.QUEUE_SIZE
    assert reasons[frame_sink.QUEUE_SIZE :] == ["queue_full"] * 3

    done: list[str | None] = []
    sink.start()  # one writer drains it in pipelined batches; the stream stays trimmed
    for _ in range(250):
        if not done and sink.offer("s", "u", 0, b"last", "per_student", done.append) is None:
            done.append("queued")
        if len(done) == 2:
            break
        await asyncio.sleep(0.02)
    assert done == ["queued", None]
    assert await redis.xlen(contracts.FRAMES_STREAM) < 300  # MAXLEN ~100, approximately
    await sink.stop()
    await redis.aclose()


async def test_hub_routes_by_student_and_drops_oldest(settings, clean_redis):
    redis = Redis.from_url(settings.redis_url)
    drops: list[int] = []
    hub = Hub(redis, on_drop=lambda: drops.append(1))
    await hub.start()
    teacher, ada, bob = DropOldestQueue(2), DropOldestQueue(10), DropOldestQueue(10)
    channel = contracts.live_channel("s1")
    with (
        hub.subscribe("s1", teacher),
        hub.subscribe("s1", ada, "ada"),
        hub.subscribe("s1", bob, "bob"),
    ):
        assert await hub.joined("s1")
        # One subscription for the session, whatever the number of its sockets here; none for
        # sessions without a socket here (no pattern subscription to every session's updates).
        assert dict(await redis.pubsub_numsub(channel)) == {channel.encode(): 1}
        assert await redis.pubsub_numpat() == 0
        for i in range(3):
            await redis.publish(channel, b'{"student_id": "ada", "n": %d}' % i)
        await redis.publish(channel, b'{"type": "session_ended"}')
        for _ in range(100):
            if bob.qsize() == 1:
                break
            await asyncio.sleep(0.02)
        assert bob.get_nowait() == b'{"type": "session_ended"}'  # session-wide: every student
        assert ada.qsize() == 4
        assert [teacher.get_nowait(), teacher.get_nowait()] == [
            b'{"student_id": "ada", "n": 2}',
            b'{"type": "session_ended"}',
        ]
        assert len(drops) == 2  # the teacher's queue of 2 lost its two oldest
    assert hub._subs == {}  # unsubscribing leaves nothing behind
    for _ in range(100):  # ...and the listener drops the session's channel
        if dict(await redis.pubsub_numsub(channel)) == {channel.encode(): 0}:
            break
        await asyncio.sleep(0.02)
    assert dict(await redis.pubsub_numsub(channel)) == {channel.encode(): 0}
    await hub.stop()
    await redis.aclose()
