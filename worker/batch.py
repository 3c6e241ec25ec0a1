"""The parts of a worker read done once per read instead of once per message (issue 21).

``InferenceWorker.process_parts`` handles up to a batch of stream entries per read; on this
2-core box a faces message costs the worker a few hundred µs, most of it the classifier, and the
rest was paid per message in Redis round trips and numpy calls. Here:

- ``lookups``: the withdrawn flags of the read's students and the policy mirror in one round
  trip (they were two);
- ``unfilter``: the "Sub" filter of every packed crop of the read undone in one pass (a
  per-message ``np.cumsum`` costs ≈ 11 µs a crop, the pass ≈ 4 µs at 32 crops);
- ``WriteBatch``: the results, acknowledgements, deletions, lag and counters of the read as one
  script call, atomic like the MULTI/EXEC it replaces, with one reply to parse instead of one
  per command (redis-py parses those in Python: ≈ 5 µs a command).
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
    """Undo the "Sub" filter of these frames' crops where still filtered (packed faces
    messages), all in one pass per crop size; each such frame then holds a view of its own
    crops."""
    by_side: defaultdict[tuple[int, ...], list[tuple[DetectedFrame, np.ndarray]]]
    by_side = defaultdict(list)
    for frame in frames:
        if frame.filtered and frame.crops is not None and len(frame.crops):
            by_side[frame.crops.shape[1:]].append((frame, frame.crops))
    for group in by_side.values():
        pixels = unfilter_rows(np.concatenate([crops for _, crops in group]))
        at = 0
        for frame, crops in group:
            frame.crops, frame.filtered = pixels[at : at + len(crops)], False
            at += len(crops)


# A read's writes in one call. KEYS: every key written (a cluster client routes by them); ARGV:
# sections, each an op, the index of its key in KEYS, a count n, then its items:
#   X key n maxlen field blob×n    XADD key MAXLEN ~ maxlen * field blob, for each blob
#   A key n group id×n             XACK key group ids, then XDEL key ids
#   H key n (field amount)×n       HINCRBY key field amount, for each pair
#   S key 1 field value            HSET key field value
#   E key 1 seconds                EXPIRE key seconds
# A script runs atomically, like MULTI/EXEC; unlike EXEC it stops at a failing command, and the
# results (X) come before the acknowledgements (A): a frame whose result failed stays pending
# (and is reclaimed), never acknowledged without its result. Sections instead of one command per
# result: redis-py packs ≈ 2 µs an argument in Python, and each XADD would repeat six.
WRITE_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local i, last = 1, #ARGV
while i <= last do
  local op, key, n = ARGV[i], KEYS[tonumber(ARGV[i + 1])], tonumber(ARGV[i + 2])
  if op == 'X' then
    local maxlen, field = ARGV[i + 3], ARGV[i + 4]
    for j = i + 5, i + 4 + n do
      redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', field, ARGV[j])
    end
    i = i + 5 + n
  elseif op == 'A' then
    redis.call('XACK', key, ARGV[i + 3], unpack(ARGV, i + 4, i + 3 + n))
    redis.call('XDEL', key, unpack(ARGV, i + 4, i + 3 + n))
    i = i + 4 + n
  elseif op == 'H' then
    for j = i + 3, i + 1 + 2 * n, 2 do
      redis.call('HINCRBY', key, ARGV[j], ARGV[j + 1])
    end
    i = i + 3 + 2 * n
  elseif op == 'S' then
    redis.call('HSET', key, ARGV[i + 3], ARGV[i + 4])
    i = i + 5
  elseif op == 'E' then
    redis.call('EXPIRE', key, ARGV[i + 3])
    i = i + 4
  else
    return redis.error_reply('unknown section ' .. tostring(op))
  end
end
return 1
"""

Arg = bytes | str | int


class WriteBatch:
    """A read's writes, sent as one call of ``WRITE_SCRIPT``: the results (XADD), the entries'
    XACK and XDEL, the lag report and the counters, grouped by key. The same atomicity as the
    MULTI/EXEC it replaces at a fraction of the Python: a transaction of 32 results, their
    acknowledgements and 32 students' counters packed ≈ 530 arguments and parsed ≈ 140 replies
    (QUEUED, then EXEC's); this packs ≈ 170 and parses one."""

    def __init__(self, script: redis.commands.core.Script) -> None:
        self.script = script  # WRITE_SCRIPT, registered once per client (``write_script``)
        self.results: dict[tuple[str, int, bytes], list[bytes]] = defaultdict(list)
        self.acks: dict[tuple[str, str], list[bytes]] = defaultdict(list)
        self.sets: list[tuple[str, Arg, Arg]] = []
        self.counters: dict[str, list[Arg]] = defaultdict(list)
        self.expires: dict[str, int] = {}

    def xadd(self, stream: str, field: bytes, value: bytes, maxlen: int) -> None:
        self.results[(stream, maxlen, field)].append(value)

    def ack_delete(self, stream: str, group: str, ids: list[bytes]) -> None:
        self.acks[(stream, group)].extend(ids)

    def hset(self, name: str, key: Arg, value: Arg) -> None:
        self.sets.append((name, key, value))

    def hincrby(self, name: str, key: str | bytes, amount: int = 1) -> None:
        self.counters[name] += (key, amount)

    def expire(self, name: str, time: int) -> None:
        self.expires[name] = time

    def execute(self) -> None:
        """Run the writes in one call (EVALSHA; the script is loaded again if Redis lost it).
        Nothing queued: no round trip."""
        keys: dict[str, int] = {}
        args: list[Arg] = []

        def section(op: str, key: str, n: int, *items: Arg) -> None:
            args.extend((op, keys.setdefault(key, len(keys) + 1), n, *items))

        for (stream, maxlen, field), blobs in self.results.items():
            section("X", stream, len(blobs), maxlen, field, *blobs)
        for (stream, group), ids in self.acks.items():
            section("A", stream, len(ids), group, *ids)
        for name, key, value in self.sets:
            section("S", name, 1, key, value)
        for name, pairs in self.counters.items():
            section("H", name, len(pairs) // 2, *pairs)
        for name, seconds in self.expires.items():
            section("E", name, 1, seconds)
        if args:
            self.script(keys=list(keys), args=args)


def write_script(r: redis.Redis) -> redis.commands.core.Script:
    """WRITE_SCRIPT registered with this client, for ``WriteBatch``."""
    return r.register_script(WRITE_SCRIPT)


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

    def write(self, pipe: WriteBatch) -> None:
        for key, n in self.totals.items():
            if n:
                pipe.hincrby(c.STATS_KEY, key, n)
        for (session_id, student_id), counts in self.students.items():
            key = c.stream_stats_key(session_id.decode(errors="replace"))
            for name, n in counts.items():
                pipe.hincrby(key, student_id + b":" + name.encode(), n)
            pipe.expire(key, c.STATE_TTL_S)
