"""The parts of a worker read done once per read instead of once per message (issue 21).

``InferenceWorker.process_parts`` handles up to a batch of stream entries per read; on this
2-core box a faces message costs the worker a few hundred µs, most of it the classifier, and the
rest was paid per message in Redis round trips and numpy calls. Here:

- ``lookups``: the withdrawn flags of the read's students and the policy mirror in one round
  trip (they were two);
- ``unfilter``: the "Sub" filter of every packed crop of the read undone in one pass (a
  per-message ``np.cumsum`` costs ≈ 11 µs a crop, the pass ≈ 4 µs at 32 crops);
- ``ResultWriter``: the results, acknowledgements, lag and counters of the read queued in one
  MULTI/EXEC with as little Python per result as redis-py allows.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

import numpy as np
import redis

from classpulse import contracts as c
from classpulse.policy import Policy
from classpulse.streams import Entry
from worker.pipeline import DetectedFrame

# Below this many crops numpy's cumsum along the rows is cheaper than the column pass (its 63
# vector additions cost a fixed ≈ 50 µs): measured 11 µs/crop (cumsum) against 78 µs at 1 crop,
# 12 at 8, 4 at 32 (column pass).
COLUMN_PASS_MIN_CROPS = 8


def lookups(r: redis.Redis, entries: list[Entry]) -> tuple[set[bytes], Policy | None]:
    """The read's students who withdrew (their frames already in the stream are dropped before
    anything is parsed) and the policy mirrored now (None: no mirror, the gateway's stamp
    rules), in one round trip."""
    students = list({f[c.F_STUDENT] for _, f in entries if c.F_STUDENT in f})
    pipe = r.pipeline(transaction=False)
    pipe.hgetall(c.POLICY_KEY)
    if students:
        pipe.mget([c.withdrawn_key(s.decode(errors="replace")) for s in students])
    replies = pipe.execute()
    mirror = Policy.from_redis(replies[0])
    if not students:
        return set(), mirror
    flags = replies[1]
    return {s for s, flag in zip(students, flags, strict=True) if flag is not None}, mirror


def unfilter_rows(crops: np.ndarray) -> np.ndarray:
    """(n, h, w) uint8 rows of "Sub" differences back to pixels: a running sum along each row,
    modulo 256. Many crops: by columns over a transposed copy, where each of the w - 1 steps is
    one contiguous vector addition over every row of every crop at once."""
    n, h, w = crops.shape
    if n < COLUMN_PASS_MIN_CROPS:
        return np.cumsum(crops, axis=2, dtype=np.uint8)
    cols = crops.reshape(n * h, w).T.copy()  # (w, n·h): column j of every row, contiguous
    for j in range(1, w):
        np.add(cols[j], cols[j - 1], out=cols[j])  # uint8: wraps modulo 256, as the filter
    return cols.T.reshape(n, h, w)


def unfilter(frames: Iterable[DetectedFrame]) -> None:
    """Undo the "Sub" filter of these frames' crops (packed faces messages), all in one pass
    per crop size; each frame then holds a view of its own crops."""
    by_side: defaultdict[tuple[int, ...], list[tuple[DetectedFrame, np.ndarray]]]
    by_side = defaultdict(list)
    for frame in frames:
        if frame.crops is not None and len(frame.crops):
            by_side[frame.crops.shape[1:]].append((frame, frame.crops))
    for group in by_side.values():
        pixels = unfilter_rows(np.concatenate([crops for _, crops in group]))
        at = 0
        for frame, crops in group:
            frame.crops = pixels[at : at + len(crops)]
            at += len(crops)


class Tally:
    """A read's counters: process-wide ones (``cp:stats``) and per student (the stream-stats
    hash of their session), summed over the read and written with its results."""

    def __init__(self) -> None:
        self.totals: Counter[str] = Counter()
        self.students: defaultdict[tuple[bytes, bytes], Counter[str]] = defaultdict(Counter)

    def add(self, key: str, n: int = 1) -> None:
        self.totals[key] += n

    def dropped(self, reason: str, fields: dict[bytes, bytes]) -> None:
        self.totals["worker.dropped." + reason] += 1
        if c.F_SESSION in fields and c.F_STUDENT in fields:
            self.students[(fields[c.F_SESSION], fields[c.F_STUDENT])]["dropped." + reason] += 1

    def processed(self, session_id: str, student_id: str) -> None:
        self.students[(session_id.encode(), student_id.encode())]["processed"] += 1

    def write(self, pipe: redis.client.Pipeline) -> None:
        for key, n in self.totals.items():
            if n:
                pipe.hincrby(c.STATS_KEY, key, n)
        for (session_id, student_id), counts in self.students.items():
            key = c.stream_stats_key(session_id.decode(errors="replace"))
            for name, n in counts.items():
                pipe.hincrby(key, student_id + b":" + name.encode(), n)
            pipe.expire(key, c.STATE_TTL_S)
