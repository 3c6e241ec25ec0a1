"""Per-student token buckets for frames, shared by all of a student's sockets in this process."""

from __future__ import annotations

import time
import weakref


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
