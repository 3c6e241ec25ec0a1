"""Analysed frames leave Redis's disk too, not only its memory.

A worker deletes each frame's stream entry once its result is committed (XACK + XDEL), but a
Redis that persists with an append-only file (the shipped compose file and the embedded
default do: results must survive a restart) has already logged the XADD that carried the
payload. Only a rewrite of the file drops it: the rewrite writes the data set as it is now, in
which analysed frames no longer exist, and removes the old file. So after deleting frames a
worker asks for a rewrite (BGREWRITEAOF), at most once per ``every_s`` across all workers (a key
with NX and a TTL elects one), and never while one is running. A Redis without an append-only
file, or one that refuses the command (managed services may), costs one INFO per period.
"""

from __future__ import annotations

import logging
import time

import redis

from classpulse import contracts as c

log = logging.getLogger(__name__)


class AofCompactor:
    def __init__(self, r: redis.Redis, name: str, every_s: float) -> None:
        self.r = r
        self.name = name
        self.every_s = every_s
        self._dirty = False  # frames deleted since the last rewrite this worker asked for
        self._last = 0.0
        self.disabled = every_s <= 0
        self.rewrites = 0  # rewrites this worker started (tests, logs)

    def deleted(self) -> None:
        """Frames were deleted from a stream: their payloads may still be in the file."""
        self._dirty = True
        self.maybe_rewrite()

    def maybe_rewrite(self) -> bool:
        """Start a rewrite if frames were deleted and the period has passed; True if started."""
        now = time.monotonic()
        if self.disabled or not self._dirty or now - self._last < self.every_s:
            return False
        self._last = now
        try:
            info = self.r.info("persistence")
            if not int(info.get("aof_enabled", 0)):
                self._dirty = False  # nothing reaches a disk; look again next period
                return False
            if int(info.get("aof_rewrite_in_progress", 0)):
                return False  # it started before our deletions may have been applied: retry
            if not self.r.set(c.AOF_REWRITE_KEY, self.name, nx=True, px=int(self.every_s * 1000)):
                return False  # another worker asked within the period
            self.r.bgrewriteaof()
        except redis.ResponseError as exc:
            if "already in progress" in str(exc) or "scheduled" in str(exc):
                return False
            log.warning(
                "Redis refuses BGREWRITEAOF (%s): analysed frames may stay in its "
                "append-only file until Redis rewrites it itself",
                exc,
            )
            self.disabled = True
            return False
        self._dirty = False
        self.rewrites += 1
        log.debug("asked Redis to rewrite its append-only file")
        return True
