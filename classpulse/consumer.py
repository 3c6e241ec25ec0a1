"""The consumer loop the inference worker and the aggregator share (sync redis-py).

Each process is one consumer of a consumer group over its stream shards: it makes the groups,
keeps a heartbeat key alive, reads (what dead consumers left pending, every few seconds, else
new entries), handles what it read, and survives what a restart of Redis (or, for the
aggregator, of PostgreSQL) does to it: connection errors back off exponentially, and a lost
group (NOGROUP: Redis came back without its data; UNBLOCKED, Redis 7: a shard deleted while
read) makes it create the groups again. What each process does with a read (the worker's model
call and atomic write, the aggregator's flush-spanning reads, fold and publish) stays in the
process: it overrides the steps below. No database and no model here: both processes import it.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from classpulse import contracts as c
from classpulse.streams import (
    Backoff,
    Heartbeat,
    Parts,
    consumer_name,
    ensure_groups,
    read_groups,
    reclaim_all,
)

log = logging.getLogger(__name__)
# Pending entries of dead consumers are looked for this often at most (and at least once per
# reclaim idle time, when that is shorter).
RECLAIM_EVERY_S = 5.0


def lost_group(exc: redis.ResponseError) -> bool:
    """Whether Redis lost the consumer group under a read: NOGROUP (it restarted without its
    data) or, Redis 7, UNBLOCKED (a stream shard was deleted while a read waited on it)."""
    return "NOGROUP" in str(exc) or "UNBLOCKED" in str(exc)


class StreamConsumer:
    """One consumer (``name``: role, host, pid) of ``group`` over ``streams``; ``run`` is the
    loop. ``read`` and ``consume`` are the process's; ``setup``, ``idle``, ``tick``, ``outage``
    and ``stopped`` are hooks with nothing (or only the groups) to do by default."""

    # Whether a read whose handling failed on an outage is handled again as is once the outage
    # ends (the aggregator: its commit is idempotent) or dropped, left pending to be reclaimed
    # (the worker: its frames grow stale, and its write must not be repeated).
    retry_failed_read = False

    def __init__(
        self,
        r: redis.Redis,
        *,
        role: str,
        group: str,
        streams: list[str],
        heartbeat_prefix: str,
        reclaim_idle_ms: int,
    ) -> None:
        self.r = r
        self.role = role
        self.name = consumer_name(role)
        self.heartbeat = Heartbeat(r, heartbeat_prefix + self.name, c.HEARTBEAT_TTL_S)
        self.group = group
        self.streams = streams
        self.reclaim_idle_ms = reclaim_idle_ms
        self._last_reclaim = 0.0

    # --- the process's steps ----------------------------------------------------------------
    def setup(self) -> None:
        """Before the first read and again after Redis was lost: the consumer groups."""
        ensure_groups(self.r, self.streams, self.group)

    def read(self) -> Parts:
        """The next read as (stream, entries) parts; empty when there was nothing."""
        raise NotImplementedError

    def consume(self, parts: Parts) -> int:
        """Process and acknowledge one read; return how many entries it produced or applied."""
        raise NotImplementedError

    def idle(self) -> None:
        """After a read that found nothing."""

    def tick(self) -> None:
        """After every turn of the loop, whether or not it read anything."""

    def outage(self, exc: Exception) -> str | None:
        """What is unavailable when ``exc`` (not a Redis error) means a transient outage, e.g.
        "database": the loop then backs off and retries; None: ``exc`` is raised."""
        del exc  # a process with other outages than Redis's overrides this
        return None

    def stopped(self) -> None:
        """Once the loop ended (the heartbeat is already cleared)."""

    # --- shared reading ---------------------------------------------------------------------
    def reclaim(self, count: int) -> Parts:
        """What dead consumers left pending longer than ``reclaim_idle_ms`` (XAUTOCLAIM, up to
        ``count`` per stream), now this consumer's; looked for every few seconds only, empty in
        between. A process reads these before anything new: they are late already."""
        now = time.monotonic()
        if now - self._last_reclaim <= min(RECLAIM_EVERY_S, self.reclaim_idle_ms / 1000):
            return []
        self._last_reclaim = now
        claimed = reclaim_all(
            self.r, self.streams, self.group, self.name, self.reclaim_idle_ms, count
        )
        if claimed:
            n = sum(len(e) for _, e in claimed)
            log.info("%s reclaimed %d entries that dead consumers left pending", self.name, n)
        return claimed

    def read_new(self, count: int, block: int | None) -> Parts:
        """New entries of every stream in one XREADGROUP: up to ``count`` per stream, waiting up
        to ``block`` ms for the first."""
        return read_groups(self.r, self.streams, self.group, self.name, count, block=block)

    # --- the loop ---------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Read and handle until ``stop`` is set; the read in hand is finished first."""
        backoff = Backoff()
        ready = False
        parts: Parts = []
        while not stop.is_set():
            try:
                if not ready:
                    self.setup()
                    ready = True
                self.heartbeat.beat()
                if not parts:  # else: a read whose handling failed, retried as is
                    parts = self.read()
                if parts:
                    self.consume(parts)
                    parts = []
                else:
                    self.idle()
                self.tick()
                backoff.reset()
            except redis.ResponseError as exc:
                if not lost_group(exc):
                    raise
                ready, parts = False, []  # its entries went with the group
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                ready = False
                parts = parts if self.retry_failed_read else []
                log.warning("redis unavailable (%s); retrying in %.1fs", exc, backoff.delay)
                backoff.wait(stop)
            except Exception as exc:
                what = self.outage(exc)
                if what is None:
                    raise
                parts = parts if self.retry_failed_read else []
                log.warning("%s; retrying in %.1fs", what, backoff.delay)
                backoff.wait(stop)
        self.heartbeat.clear()
        self.stopped()
        log.info("%s %s stopped", self.role, self.name)
