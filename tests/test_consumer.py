"""The consumer loop the worker and the aggregator share (classpulse/consumer.py), on the real
Redis with a consumer that only records what the loop asks of it: groups made, entries consumed
and acknowledged, idle and tick hooks, a lost group made again, an outage retried (or the read
dropped), an unknown error raised, the heartbeat cleared on stop."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from classpulse.consumer import StreamConsumer
from classpulse.streams import Parts

STREAM, GROUP = "cp:test:consumer", "testers"


class Outage(Exception):
    """Stands for a database that went away (the aggregator's PostgreSQL)."""


class Recorder(StreamConsumer):
    def __init__(self, r: redis.Redis, *, retry: bool = False, fail: int = 0) -> None:
        super().__init__(
            r,
            role="tester",
            group=GROUP,
            streams=[STREAM],
            heartbeat_prefix="cp:test:heartbeat:",
            reclaim_idle_ms=60_000,
        )
        self.retry_failed_read = retry
        self.fail = fail  # the next reads whose consume raises Outage
        self.setups = self.idles = self.ticks = self.stops = 0
        self.consumed: list[list[bytes]] = []  # each consume's entry ids, failed ones included

    def setup(self) -> None:
        super().setup()
        self.setups += 1

    def read(self) -> Parts:
        return self.reclaim(10) or self.read_new(10, block=20)

    def consume(self, parts: Parts) -> int:
        ids = [e[0] for _, entries in parts for e in entries]
        self.consumed.append(ids)
        if self.fail:
            self.fail -= 1
            raise Outage("gone")
        for stream, entries in parts:
            self.r.xack(stream, self.group, *[e[0] for e in entries])
        return len(ids)

    def idle(self) -> None:
        self.idles += 1

    def tick(self) -> None:
        self.ticks += 1

    def outage(self, exc: Exception) -> str | None:
        return "test database unavailable" if isinstance(exc, Outage) else None

    def stopped(self) -> None:
        self.stops += 1


def running(consumer: Recorder, until, timeout: float = 5.0) -> None:
    """Run the loop in a thread until ``until()`` holds, then stop it and wait for the end."""
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while not until() and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()
    assert until(), "the loop never got there"


def test_the_loop_reads_consumes_acknowledges_and_clears_its_heartbeat(clean_redis):
    consumer = Recorder(clean_redis)
    ids = [clean_redis.xadd(STREAM, {"n": str(i)}) for i in range(3)]
    seen_heartbeat = []

    def done() -> bool:
        seen_heartbeat.append(clean_redis.exists(consumer.heartbeat.key))
        return sum(len(c) for c in consumer.consumed) == 3 and consumer.idles > 0

    running(consumer, done)
    assert [i for c in consumer.consumed for i in c] == ids
    assert clean_redis.xpending(STREAM, GROUP)["pending"] == 0
    assert consumer.setups == 1 and consumer.ticks >= 2 and consumer.stops == 1
    assert any(seen_heartbeat) and not clean_redis.exists(consumer.heartbeat.key)


def test_a_lost_group_is_made_again(clean_redis):
    consumer = Recorder(clean_redis)
    added: list[bytes] = []

    def step() -> bool:
        if consumer.idles and not clean_redis.exists("deleted"):
            clean_redis.set("deleted", 1)
            clean_redis.delete(STREAM)  # Redis lost its data: NOGROUP on the next read
        elif consumer.setups >= 2 and not added:
            added.append(clean_redis.xadd(STREAM, {"n": "1"}))
        return bool(added) and added in consumer.consumed

    running(consumer, step)
    assert consumer.setups == 2 and consumer.consumed == [added]


@pytest.mark.parametrize("retry", [True, False])
def test_an_outage_backs_off_then_retries_the_read_or_leaves_it_pending(clean_redis, retry):
    consumer = Recorder(clean_redis, retry=retry, fail=1)
    first = clean_redis.xadd(STREAM, {"n": "1"})
    running(consumer, lambda: len(consumer.consumed) >= 2 or consumer.idles > 0)
    if retry:  # the same read consumed again once the outage passed, then acknowledged
        assert consumer.consumed[:2] == [[first], [first]]
        assert clean_redis.xpending(STREAM, GROUP)["pending"] == 0
    else:  # dropped: left pending, for a reclaim by this or another consumer
        assert consumer.consumed == [[first]]
        assert clean_redis.xpending(STREAM, GROUP)["pending"] == 1
    assert consumer.setups == 1  # an outage other than Redis's keeps the groups


def test_an_unknown_error_is_raised(clean_redis):
    consumer = Recorder(clean_redis)
    consumer.outage = lambda exc: None  # type: ignore[method-assign]  # nothing is an outage
    consumer.fail = 1
    clean_redis.xadd(STREAM, {"n": "1"})
    with pytest.raises(Outage):
        consumer.run(threading.Event())
