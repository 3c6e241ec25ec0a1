"""The aggregator: results stream → per-student smoothing + time buckets → PostgreSQL + live.
(Over 300 lines: the read → commit → publish → ack loop and its exactly-once rules are one unit;
folding, live state, class mix and alerts live in their own modules.)

The only writer of emotion data. Each flush (what arrived since the last one, gathered for up to
CLASSPULSE_AGGREGATOR_LINGER_MS, more while the stream has a backlog, bounded by
FLUSH_MAX_RESULTS and FLUSH_MAX_S) is shown live at once: one update per student per flush
(their latest state), without students who withdrew or were erased (their Redis flag) and
without a result shown before. Its results are then held, with the flushes after it, until
their commit is due (CLASSPULSE_AGGREGATOR_COMMIT_MS): one transaction folds them into their
buckets, each bucket written once, and records their frame ids in ``applied_results``; only
frames not seen before are added and only students that exist and have not withdrawn, so a
replay (a crash between commit and XACK, a reclaimed batch) never double-counts. Results are
acknowledged (and deleted from the stream) only after that commit. The loop around (groups,
heartbeat, reclaim, backoff, a lost group) is the one the inference worker runs too:
classpulse/consumer.py.
"""

from __future__ import annotations

import gc
import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import msgspec
import redis
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from aggregator.alerts import AlertEngine
from aggregator.buckets import Delta, fold, write_buckets
from aggregator.class_mix import ClassMix, publish_class
from aggregator.live_state import STATE_IDLE_S, Step, StudentState, add_attention, build, step
from aggregator.policy_reader import PolicyReader, apply_mode
from classpulse import contracts as c
from classpulse import views
from classpulse.consumer import StreamConsumer
from classpulse.db import make_engine
from classpulse.policy import EmotionMode, Policy
from classpulse.settings import DEFAULT_UNCERTAIN_BELOW, Settings
from classpulse.streams import Entry, Parts, read_groups, stop_on_signals
from records import partitions
from records.retention import Retention

log = logging.getLogger(__name__)
RECLAIM_IDLE_MS = 15_000
READ_COUNT = 500  # results per XREADGROUP
READ_BLOCK_MS = 200  # an idle aggregator's read waits this long for results
# While reads come back full (a backlog), more reads join the same flush (one transaction): the
# more results a flush holds, the more of them share a student's bucket and its one upsert
# (at 1,000 students a read of 500 holds each student about once). Bounded so that a flush
# stays one short transaction (≈ 0.5 s at 10,000) and the live updates of its first results are
# not held long; 10,000 wrote 0.2 bucket rows per result in bench/bench_aggregator.py at 1,000
# students, 5,000 wrote 0.3 (and cost ≈ 15 % more CPU per result).
FLUSH_MAX_RESULTS = 10_000
FLUSH_MAX_S = 0.25  # reading a flush stops this long after its first read returned
# Below this many results per second a flush does not linger (CLASSPULSE_AGGREGATOR_LINGER_MS):
# a flush per read then costs little CPU in all (200 students at 2 fps: ≈ 6 % of a core at
# 282 µs a result), and the dashboards get each result as soon as it is read.
LINGER_FROM_RATE = 400.0
PRUNE_EVERY_S = 60.0
GC_YOUNG = 20_000  # allocations between young-generation collections (Python's default: 700)
THRESHOLD_READ_S = 10.0  # the workers' published "uncertain" threshold is re-read this often

# Id lists go as one JSON array each: msgspec encodes thousands of ids in microseconds, where
# psycopg's Python list dumper quotes a text[] element by element.
# It returns the ids applied before (a replay; usually none), not the thousands it inserts.
APPLY_IDS = text(
    "WITH ids AS (SELECT jsonb_array_elements_text(CAST(:ids AS jsonb)) AS id),"
    " new AS (INSERT INTO applied_results (id) SELECT id FROM ids"
    " ON CONFLICT (id) DO NOTHING RETURNING id)"
    " SELECT id FROM ids EXCEPT SELECT id FROM new"
)
# FOR KEY SHARE: a student deleted meanwhile (an admin's request, retention) is deleted only after
# this batch commits, so the buckets' foreign key holds; the cascade then removes the buckets.
# Withdrawal (an UPDATE of withdrawn_at) does not wait: it is no key update.
KNOWN_STUDENTS = text(
    "SELECT id::text FROM students WHERE withdrawn_at IS NULL AND id = ANY(ARRAY("
    "SELECT CAST(jsonb_array_elements_text(CAST(:ids AS jsonb)) AS uuid))) ORDER BY id FOR KEY SHARE"
)


@dataclass
class Held:
    """A flush's results once shown live, with those of the flushes after it, until their
    commit: the entries by stream, their (stream, id) keys (a retried flush is not held twice),
    the decoded results, how many were malformed, and when the first was held."""

    entries: dict[str, list[Entry]] = field(default_factory=dict)
    keys: set[tuple[str, bytes | str]] = field(default_factory=set)
    results: list[c.FrameResult] = field(default_factory=list)
    bad: int = 0
    since: float | None = None

    def add(self, parts: Parts, results: list[c.FrameResult], bad: int) -> None:
        for stream, entries in parts:
            self.entries.setdefault(stream, []).extend(entries)
            self.keys.update((stream, e[0]) for e in entries)
        self.results.extend(results)
        self.bad += bad
        if self.since is None:
            self.since = time.monotonic()


class Aggregator(StreamConsumer):
    retry_failed_read = True  # a flush whose commit failed is folded again: it is idempotent

    def __init__(self, settings: Settings, r: redis.Redis, engine: Engine) -> None:
        # The results stream shards this aggregator consumes (all unless told).
        super().__init__(
            r,
            role="aggregator",
            group=c.AGGREGATOR_GROUP,
            streams=[c.results_stream(k, settings.stream_shards) for k in settings.owned_shards],
            heartbeat_prefix=c.AGGREGATOR_HEARTBEAT_PREFIX,
            reclaim_idle_ms=settings.reclaim_idle_ms or RECLAIM_IDLE_MS,
        )
        self.settings = settings
        self.engine = engine
        self.results_streams = self.streams  # the results stream shards read (StreamConsumer's)
        self.linger_s = settings.aggregator_linger_ms / 1000  # flushes start at most this often
        self._read_ended = 0.0  # when the last flush stopped reading (time.monotonic)
        self._rate = 0.0  # results per second read by the last flush (since the one before)
        self.commit_s = settings.aggregator_commit_ms / 1000
        self._held = Held()  # shown live, not committed yet (CLASSPULSE_AGGREGATOR_COMMIT_MS)
        # Frame ids shown live since the last commit, and in the window before it.
        self._shown: set[str] = set()
        self._shown_before: set[str] = set()
        self.alerts = AlertEngine(r, engine, self.name)  # alert rules: aggregator/alerts.py
        self.students: dict[str, StudentState] = {}
        self.privacy = PolicyReader(r, engine)  # the organisation's policy, read per batch
        self.policy = self.privacy.policy
        self.class_mix = ClassMix()
        self._threshold, self._threshold_at = DEFAULT_UNCERTAIN_BELOW, -THRESHOLD_READ_S
        self._pending_own = True  # on start, first re-read what this name left unacknowledged
        self._last_prune = time.monotonic()
        self._uuids: set[str] = set()  # ids already checked as UUIDs (emptied by prune)
        self._bucket_starts: dict[int, datetime] = {}  # bucket number -> its start

    # --- reading (the consumer loop's steps: classpulse/consumer.py) --------------------------
    def read(self) -> Parts:
        """The next flush as (results stream shard, entries) parts: after a restart this
        consumer's own unacknowledged results, then what a dead aggregator left (looked for
        every few seconds), else new results of every owned shard: one XREADGROUP, and more while
        the stream has a backlog (``read_more``)."""
        # COUNT is per stream: about 500 results per read however many shards (a flush, one
        # transaction, may join several reads: read_more).
        count = max(50, -(-READ_COUNT // len(self.results_streams)))
        streams = self.results_streams
        if self._pending_own:  # after a restart: this consumer's own unacknowledged results first
            self.commit_held()  # what is held is pending too: committed, it is not re-read
            parts = read_groups(self.r, streams, c.AGGREGATOR_GROUP, self.name, count, start="0")
            if parts:
                return parts
            self._pending_own = False
        claimed = self.reclaim(count)
        if claimed:  # a flush of its own: those results are late already
            return claimed
        return self.read_more(self.read_new(count, READ_BLOCK_MS), count)

    def read_more(self, parts: Parts, count: int) -> Parts:
        """Add further reads of new results to ``parts``: at once while reads come back full (a
        backlog: results that are late already), and while caught up, at LINGER_FROM_RATE or more,
        until the linger since the previous flush stopped reading has passed, up to FLUSH_MAX_RESULTS or FLUSH_MAX_S. So
        flushes start at most every CLASSPULSE_AGGREGATOR_LINGER_MS while results stream in (a
        flush's fixed cost, one transaction and a bucket row per student and class, is shared
        by the results of that time), and a result that ends a quiet spell waits for none: no
        result waits more than the linger, plus the commit in progress when it arrived. Only
        new results (">"): a re-read of pending ones returns the same entries until they are
        acknowledged."""
        start = time.monotonic()
        linger_until = self._read_ended + (self.linger_s if self._rate >= LINGER_FROM_RATE else 0)
        deadline = start + FLUSH_MAX_S
        merged: dict[str, list[Entry]] = {}
        total, last = 0, parts
        while True:
            for stream, entries in last:
                merged.setdefault(stream, []).extend(entries)
                total += len(entries)
            full = any(len(entries) >= count for _, entries in last)
            now = time.monotonic()
            if not total or total >= FLUSH_MAX_RESULTS or now >= deadline:
                break
            block = None
            if not full:  # caught up: wait for more only until the linger has passed
                if now >= linger_until:
                    break
                block = max(1, int((linger_until - now) * 1000))
            try:
                last = read_groups(
                    self.r, self.results_streams, c.AGGREGATOR_GROUP, self.name, count, block
                )
            except redis.RedisError:
                self._pending_own = True  # what this flush read stays pending: re-read it first
                raise
        now = time.monotonic()  # the arrival rate: what this flush read since the last one
        self._rate, self._read_ended = total / max(now - self._read_ended, 1e-3), now
        return list(merged.items())

    # --- folding ------------------------------------------------------------------------------
    def bucket_start(self, received_ms: float) -> datetime:
        size = self.settings.bucket_seconds
        n = int(received_ms / 1000 // size)
        start = self._bucket_starts.get(n)
        if start is None:  # a few buckets a minute: made once each, not per result
            if len(self._bucket_starts) > 1000:
                self._bucket_starts.clear()
            start = self._bucket_starts[n] = datetime.fromtimestamp(n * size, UTC)
        return start

    def commit(self, results: list[c.FrameResult]) -> list[c.FrameResult]:
        """Fold new results into their buckets in one transaction; return the ones applied.

        A student deleted between reading who is known and the upsert (the lock in
        ``KNOWN_STUDENTS`` rules that out, but a foreign key violation must never stop the
        aggregator) rolls the batch back; it is folded once more with the students read afresh,
        and the deleted student's results are dropped (and acknowledged)."""
        if not results:
            return []
        # Again at the commit, not only when shown: a policy made stricter while the results
        # were held (up to CLASSPULSE_AGGREGATOR_COMMIT_MS) decides what is stored.
        self.policy = self.privacy.current()
        apply_mode(results, self.policy)  # each result's mode: the stricter of its own and now
        try:
            return self._commit(results)
        except IntegrityError as exc:
            log.warning(
                "a student or session was deleted during the batch (%s); folding again", exc.orig
            )
            return self._commit(results)

    def known_students(self, conn: Connection, student_ids: list[str]) -> set[str]:
        """Students that exist and have not withdrawn, locked against deletion until commit."""
        ids = c.encoder.encode(student_ids).decode()
        return {row[0] for row in conn.execute(KNOWN_STUDENTS, {"ids": ids})}

    def _commit(self, results: list[c.FrameResult]) -> list[c.FrameResult]:
        with self.engine.begin() as conn:
            ids = c.encoder.encode([r.frame_id for r in results]).decode()
            seen = {row[0] for row in conn.execute(APPLY_IDS, {"ids": ids})}
            known = self.known_students(conn, list({r.student_id for r in results}))
            applied = []
            for r in results:
                # seen.add: a result written twice (a worker's retry) and read into one flush
                # counts once, like one read in two flushes
                if r.student_id in known and r.frame_id not in seen:
                    seen.add(r.frame_id)
                    applied.append(r)
            # The policy decides what each result leaves behind (aggregator/buckets.py).
            deltas: dict[tuple[str, str, datetime], Delta] = defaultdict(Delta)
            class_deltas: dict[tuple[str, datetime], Delta] = defaultdict(Delta)
            for res in applied:
                fold(res, self.bucket_start(res.received_ms), deltas, class_deltas)
            write_buckets(conn, deltas, class_deltas)
        return applied

    # --- live ---------------------------------------------------------------------------------
    def _build(self, state: StudentState, s: Step) -> c.LiveUpdate:
        below = self.uncertain_below() if s.face is not None and s.face.probs else 1.0
        return build(state, s, below, self.settings.small_face_px)

    def uncertain_below(self) -> float:
        """The setting when given, else the threshold the workers publish (their model's
        calibration, or the default), re-read at most every THRESHOLD_READ_S."""
        if self.settings.uncertain_below is not None:
            return self.settings.uncertain_below
        now = time.monotonic()
        if now - self._threshold_at > THRESHOLD_READ_S:
            self._threshold_at = now
            try:
                raw = self.r.hget(c.MODEL_INFO_KEY, "uncertain_below")
                self._threshold = float(raw) if raw else DEFAULT_UNCERTAIN_BELOW
            except (redis.RedisError, ValueError):
                pass  # keep the last one
        return self._threshold

    def prune(self, now: float | None = None) -> None:
        """Forget students not seen for STATE_IDLE_S: their smoothing restarts anyway after a
        pause (RESUME_GAP_MS), and without this the dict grew by every student ever seen."""
        now = time.monotonic() if now is None else now
        for sid in [k for k, st in self.students.items() if now - st.used > STATE_IDLE_S]:
            del self.students[sid]
        self._uuids.clear()

    def publish(self, applied: list[c.FrameResult]) -> None:
        """Fold a flush's results (``live_results``) into the students' live state in receive
        order, then publish each student's latest update once (snapshot and channel): the
        dashboard shows the newest state, and a flush of several reads costs one update per
        student."""
        now = time.monotonic()
        if now - self._last_prune > PRUNE_EVERY_S:
            self._last_prune = now
            self.prune(now)
        alpha = self.settings.smoothing_alpha
        latest: dict[str, tuple[StudentState, Step]] = {}
        for res in sorted(applied, key=lambda r: r.received_ms):
            state = self.students.get(res.student_id)
            if state is None:
                state = self.students[res.student_id] = StudentState()
            before = latest.get(res.student_id)
            if before is not None:  # an earlier result of the flush: its update is not built
                add_attention(*before)
            latest[res.student_id] = (state, step(state, res, alpha, now))
        # Each result's own mode (apply_mode) with the policy's attention switch: the policy a
        # view of it is checked against.
        modes: tuple[EmotionMode, ...] = ("per_student", "aggregate_only", "off")
        shown: dict[str, Policy] = {m: replace(self.policy, emotion_mode=m) for m in modes}
        sessions: dict[str, dict[str, bytes]] = defaultdict(dict)
        for state, s in latest.values():
            update = self._build(state, s)
            self.class_mix.observe(update)  # in memory only: the class's mix without names
            payload = c.encoder.encode(views.redact_update(update, shown[s.res.mode]))
            sessions[update.session_id][update.student_id] = payload
        publish_class(self.r, self.class_mix.updates(self.policy))
        pipe = self.r.pipeline(transaction=False)
        for session_id, payloads in sessions.items():  # one HSET and EXPIRE per session
            pipe.hset(c.snapshot_key(session_id), mapping=payloads)  # type: ignore[arg-type]
            pipe.expire(c.snapshot_key(session_id), c.STATE_TTL_S)
            for payload in payloads.values():
                pipe.publish(c.live_channel(session_id), payload)
        pipe.execute()

    # --- one flush (the consumer loop's steps: classpulse/consumer.py) ------------------------
    def consume(self, parts: Parts) -> int:
        return self.handle_parts(parts)

    def tick(self) -> None:
        if self.commit_due():  # no new results since: what is held is committed all the same
            self.commit_held()
        self.alerts.tick()  # hook: open/close alerts, at most every 2 s (aggregator/alerts.py)

    def stopped(self) -> None:
        """Commit what is held before the process ends; if that fails it stays pending, for
        this consumer after a restart or for another after the reclaim delay."""
        try:
            self.commit_held()
        except Exception as exc:  # noqa: BLE001 (PostgreSQL or Redis gone at shutdown)
            log.warning("held results left pending at shutdown: %s", exc)

    def outage(self, exc: Exception) -> str | None:
        """PostgreSQL unreachable (or its connection lost): the flush is folded again later."""
        if isinstance(exc, OperationalError) or (
            isinstance(exc, DBAPIError) and exc.connection_invalidated
        ):
            return f"database unavailable ({exc.orig})"
        return None

    def handle_parts(self, parts: Parts) -> int:
        """One flush of several results stream shards: its results shown live at once, then
        held, with what earlier flushes held, until their commit is due (``commit_held``).
        Entries already held (a flush retried after an outage, a re-read of pending ones) are
        skipped. Returns how many results a commit made here applied (0 when none was due)."""
        fresh: Parts = []
        results, bad = [], 0
        for stream, part in parts:
            entries = [e for e in part if (stream, e[0]) not in self._held.keys]
            if not entries:
                continue
            fresh.append((stream, entries))
            for _, fields in entries:
                try:
                    res = c.result_decoder.decode(fields[c.R_DATA])
                    for i in (res.session_id, res.student_id):
                        if i not in self._uuids:  # a student's id is parsed once, not per result
                            uuid.UUID(i)
                            self._uuids.add(i)
                    # FrameResult.v is checked here, where results are consumed: one of a schema
                    # this aggregator does not know (a newer worker mid-upgrade) is malformed.
                    if res.v != c.SCHEMA_VERSION:
                        raise ValueError(f"result schema version {res.v}")
                    results.append(res)
                except (KeyError, msgspec.DecodeError, ValueError):
                    bad += 1
        if fresh:
            live = self.live_results(results)
            self.publish(live)
            # Marked shown once published: a flush retried after a failed publish shows them.
            self._shown.update(r.frame_id for r in live)
            self.alerts.observe(live)  # hook: the alert rules evaluate these sessions (tick)
            self._held.add(fresh, results, bad)
        return self.commit_held() if self.commit_due() else 0

    def live_results(self, results: list[c.FrameResult]) -> list[c.FrameResult]:
        """The results to show now, before their commit: under the policy in force (the
        stricter of each result's mode and now), without students who withdrew or were erased
        meanwhile (the flag the gateway sets, as the workers read it; the commit drops them
        from storage), and without a result shown before (a worker's retry, a replay)."""
        if not results:
            return []
        self.policy = self.privacy.current()
        apply_mode(results, self.policy)
        students = list({r.student_id for r in results})
        flags = self.r.mget([c.withdrawn_key(s) for s in students])
        gone = {s for s, flag in zip(students, flags, strict=True) if flag is not None}
        live, ids = [], set()
        for r in results:
            if (
                r.student_id in gone
                or r.frame_id in ids
                or r.frame_id in self._shown
                or r.frame_id in self._shown_before
            ):
                continue
            ids.add(r.frame_id)
            live.append(r)
        return live

    def commit_due(self) -> bool:
        held = self._held
        return held.since is not None and (
            time.monotonic() - held.since >= self.commit_s or len(held.results) >= FLUSH_MAX_RESULTS
        )

    def commit_held(self) -> int:
        """Fold every held result into its buckets in one transaction, then acknowledge and
        delete their entries; a failure leaves them held and pending, to be committed again
        (idempotent: applied ids). Returns how many were applied (not stored before)."""
        held = self._held
        if held.since is None:
            return 0
        results = held.results
        applied = self.commit(results)
        pipe = self.r.pipeline(transaction=False)
        for stream, entries in held.entries.items():
            # Acknowledged and deleted: a stored result has no reader left, and what stays in a
            # stream (per student probabilities) stays in Redis's memory and its append-only
            # file, whose rewrites copy it every time (worker/aof.py).
            ids = [e[0] for e in entries]
            pipe.xack(stream, c.AGGREGATOR_GROUP, *ids)
            pipe.xdel(stream, *ids)
        pipe.hincrby(c.STATS_KEY, "aggregator.applied", len(applied))
        if len(results) - len(applied):
            pipe.hincrby(c.STATS_KEY, "aggregator.skipped", len(results) - len(applied))
        if held.bad:
            pipe.hincrby(c.STATS_KEY, "aggregator.malformed", held.bad)
        pipe.execute()
        self._held = Held()
        self._shown_before, self._shown = self._shown, set()
        return len(applied)


def tune_gc() -> None:
    """Fewer, cheaper garbage collections for the aggregator's process. A flush allocates tens
    of thousands of objects (entries, results, deltas) that live until it ends and are freed by
    reference counting; with Python's defaults the collector runs about a hundred times per
    flush and now and then scans every object of the process (SQLAlchemy's included): about
    8 µs of CPU per result in bench/bench_aggregator.py. What exists at start-up is frozen out
    of collections, and the young generation is larger."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG, 10, 10)


def main(settings: Settings) -> int:
    if not settings.redis_url or not settings.database_url:
        raise SystemExit(
            "CLASSPULSE_DATABASE_URL and CLASSPULSE_REDIS_URL must be set (or use `classpulse run`)"
        )
    stop = stop_on_signals()
    r = redis.Redis.from_url(settings.redis_url, socket_timeout=10, health_check_interval=30)
    engine = make_engine(settings.database_url, pool_size=2)
    # Today's bucket partitions before the first fold: after days down, a backlog folded first
    # would put today's rows in the DEFAULT partition for good (records/partitions.py).
    try:
        partitions.ensure(engine)
    except DBAPIError as exc:  # PostgreSQL not up yet: the retention thread makes them later
        log.warning("aggregator: cannot create bucket partitions yet: %s", exc)
    retention = Retention(
        engine,
        audit_days=settings.audit_retention_days,
        whole_days=settings.retention_whole_days,
    ).start(stop)  # its own thread: deletes never stall folding
    aggregator = Aggregator(settings, r, engine)
    tune_gc()
    aggregator.run(stop)
    retention.join(5)
    engine.dispose()
    return 0
