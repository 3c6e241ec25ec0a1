"""The aggregator: results stream → per-student smoothing + time buckets → PostgreSQL + live.

The only writer of emotion data. Each batch is folded into its buckets in ONE transaction that
also records the batch's frame ids in ``applied_results``; only frames not seen before are
added, so a replay (a crash between commit and XACK, a reclaimed batch) never double-counts.
Results are acknowledged only after the commit; live updates are published after it too.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import msgspec
import numpy as np
import redis
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from classpulse import contracts as c
from classpulse import views
from classpulse.db import make_engine
from classpulse.policy import EmotionMode, Policy
from classpulse.settings import DEFAULT_UNCERTAIN_BELOW, Settings
from classpulse.streams import (
    Backoff,
    Entry,
    Heartbeat,
    consumer_name,
    ensure_groups,
    read_groups,
    reclaim_all,
    stop_on_signals,
)
from records import partitions
from records.retention import Retention
from worker.alerts import AlertEngine
from worker.attention import AttentionState, observed
from worker.buckets import Delta, fold, main_face, write_buckets
from worker.class_mix import ClassMix, publish_class
from worker.policy_reader import PolicyReader, apply_mode

log = logging.getLogger(__name__)
RECLAIM_IDLE_MS = 15_000
READ_COUNT = 500  # results per batch (one transaction)
RESUME_GAP_MS = 10_000  # a student's frames this far apart: the stream paused, start afresh
MIN_STREAK = 2  # faced frames after a (re)start before a label is shown
STATE_IDLE_S = 300.0  # a student's smoothing state unused this long is dropped (memory bound)
PRUNE_EVERY_S = 60.0
THRESHOLD_READ_S = 10.0  # the workers' published "uncertain" threshold is re-read this often

APPLY_IDS = text(
    "INSERT INTO applied_results (id) SELECT unnest(CAST(:ids AS text[])) "
    "ON CONFLICT (id) DO NOTHING RETURNING id"
)
# FOR KEY SHARE: a student deleted meanwhile (an admin's request, retention) is deleted only after
# this batch commits, so the buckets' foreign key holds; the cascade then removes the buckets.
# Withdrawal (an UPDATE of withdrawn_at) does not wait: it is no key update.
KNOWN_STUDENTS = text(
    "SELECT id::text FROM students WHERE id = ANY(CAST(:ids AS uuid[])) AND withdrawn_at IS NULL"
    " ORDER BY id FOR KEY SHARE"
)


@dataclass
class StudentState:
    """Exponentially smoothed probabilities of one student's recent faced frames."""

    probs: np.ndarray | None = None
    labels: tuple[str, ...] = ()
    frames: int = 0
    last_ms: float = 0.0  # receive time of the latest frame, to notice a stream that paused
    streak: int = 0  # faced frames since the stream (re)started
    used: float = 0.0  # monotonic time this process last updated it, to drop idle states
    attention: AttentionState | None = None  # made at the first observed orientation


class Aggregator:
    def __init__(self, settings: Settings, r: redis.Redis, engine: Engine) -> None:
        self.settings = settings
        self.r = r
        self.engine = engine
        self.name = consumer_name("aggregator")
        self.heartbeat = Heartbeat(r, c.AGGREGATOR_HEARTBEAT_PREFIX + self.name, c.HEARTBEAT_TTL_S)
        self.alerts = AlertEngine(r, engine, self.name)  # alert rules: worker/alerts.py
        self.students: dict[str, StudentState] = {}
        self.privacy = PolicyReader(r, engine)  # the organisation's policy, read per batch
        self.policy = self.privacy.policy
        self.class_mix = ClassMix()
        self._threshold, self._threshold_at = DEFAULT_UNCERTAIN_BELOW, -THRESHOLD_READ_S
        self._pending_own = True  # on start, first re-read what this name left unacknowledged
        self._last_reclaim = 0.0
        self._last_prune = time.monotonic()
        self.reclaim_idle_ms = settings.reclaim_idle_ms or RECLAIM_IDLE_MS
        # The results stream shards this aggregator consumes (all unless told).
        self.results_streams = [
            c.results_stream(k, settings.stream_shards) for k in settings.owned_shards
        ]

    # --- reading ------------------------------------------------------------------------------
    def read(self) -> list[tuple[str, list[Entry]]]:
        """The next batch as (results stream shard, entries) parts: after a restart this
        consumer's own unacknowledged results, then (every few seconds) what a dead aggregator
        left, else new results of every owned shard in one XREADGROUP."""
        # COUNT is per stream: about 500 results per batch (one transaction) however many shards.
        count = max(50, -(-READ_COUNT // len(self.results_streams)))
        streams = self.results_streams
        if self._pending_own:  # after a restart: this consumer's own unacknowledged results first
            parts = read_groups(self.r, streams, c.AGGREGATOR_GROUP, self.name, count, start="0")
            if parts:
                return parts
            self._pending_own = False
        now = time.monotonic()
        if now - self._last_reclaim > min(5.0, self.reclaim_idle_ms / 1000):
            self._last_reclaim = now
            claimed = reclaim_all(
                self.r, streams, c.AGGREGATOR_GROUP, self.name, self.reclaim_idle_ms, count
            )
            if claimed:
                n = sum(len(e) for _, e in claimed)
                log.info("reclaimed %d results from a dead aggregator", n)
                return claimed
        return read_groups(self.r, streams, c.AGGREGATOR_GROUP, self.name, count, block=200)

    def read_batch(self) -> list[Entry]:
        """The entries of ``read`` (one shard's: ``handle`` acknowledges them on the first owned
        results stream; with several shards use ``read`` and ``handle_parts``)."""
        return [e for _, entries in self.read() for e in entries]

    # --- folding ------------------------------------------------------------------------------
    def bucket_start(self, received_ms: float) -> datetime:
        size = self.settings.bucket_seconds
        return datetime.fromtimestamp((received_ms / 1000) // size * size, UTC)

    def commit(self, results: list[c.FrameResult]) -> list[c.FrameResult]:
        """Fold new results into their buckets in one transaction; return the ones applied.

        A student deleted between reading who is known and the upsert (the lock in
        ``KNOWN_STUDENTS`` rules that out, but a foreign key violation must never stop the
        aggregator) rolls the batch back; it is folded once more with the students read afresh,
        and the deleted student's results are dropped (and acknowledged)."""
        if not results:
            return []
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
        return {row[0] for row in conn.execute(KNOWN_STUDENTS, {"ids": student_ids})}

    def _commit(self, results: list[c.FrameResult]) -> list[c.FrameResult]:
        with self.engine.begin() as conn:
            fresh = {
                row[0] for row in conn.execute(APPLY_IDS, {"ids": [r.frame_id for r in results]})
            }
            known = self.known_students(conn, list({r.student_id for r in results}))
            applied = [r for r in results if r.frame_id in fresh and r.student_id in known]
            # The policy decides what each result leaves behind (worker/buckets.py).
            deltas: dict[tuple[str, str, datetime], Delta] = defaultdict(Delta)
            class_deltas: dict[tuple[str, datetime], Delta] = defaultdict(Delta)
            for res in applied:
                fold(res, self.bucket_start(res.received_ms), deltas, class_deltas)
            write_buckets(conn, deltas, class_deltas)
        return applied

    # --- live ---------------------------------------------------------------------------------
    def live_update(self, res: c.FrameResult) -> c.LiveUpdate:
        state = self.students.setdefault(res.student_id, StudentState())
        state.frames += 1
        state.used = time.monotonic()
        face = main_face(res)
        update = c.LiveUpdate(
            type="student",
            session_id=res.session_id,
            student_id=res.student_id,
            t=time.time(),
            faces=len(res.faces),
            frames=state.frames,
            received_ms=res.received_ms,
            seq=res.seq,
        )
        if res.received_ms - state.last_ms > RESUME_GAP_MS:  # smoothing must not bridge a pause
            state.probs, state.streak = None, 0
        state.last_ms = max(state.last_ms, res.received_ms)
        faces = observed(face)  # None unless the policy and the result both observe attention
        if faces is not None and state.attention is None:
            state.attention = AttentionState()
        if state.attention is not None:
            state.attention.fill(update, faces, res.received_ms)
        if face is None or not face.probs:
            update.presence = "no_face" if not res.faces else "present"
            return update
        state.streak += 1
        labels = tuple(face.probs)
        p = np.fromiter(face.probs.values(), np.float64, len(labels))
        if state.probs is None or state.labels != labels:
            state.probs, state.labels = p, labels
        else:
            a = self.settings.smoothing_alpha
            state.probs = a * p + (1 - a) * state.probs
        k = int(np.argmax(state.probs))
        update.confidence = round(float(state.probs[k]), 4)
        update.emotion = labels[k] if update.confidence >= self.uncertain_below() else "uncertain"
        update.probs = {
            label: round(float(v), 4) for label, v in zip(labels, state.probs, strict=True)
        }
        # Never a bare label when the estimate can't carry one: say why it is uncertain.
        if min(face.box[2], face.box[3]) < self.settings.small_face_px:
            update.emotion, update.quality = "uncertain", "face_too_small"
        elif state.streak < MIN_STREAK:
            update.emotion, update.quality = "uncertain", "few_frames"
        elif update.emotion == "uncertain":
            update.quality = "low_confidence"
        return update

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

    def publish(self, applied: list[c.FrameResult]) -> None:
        now = time.monotonic()
        if now - self._last_prune > PRUNE_EVERY_S:
            self._last_prune = now
            self.prune(now)
        latest: dict[str, c.LiveUpdate] = {}
        # Each result's own mode (apply_mode) with the policy's attention switch: the policy a
        # view of it is checked against.
        modes: tuple[EmotionMode, ...] = ("per_student", "aggregate_only", "off")
        shown: dict[str, Policy] = {m: replace(self.policy, emotion_mode=m) for m in modes}
        for res in sorted(applied, key=lambda r: r.received_ms):
            update = self.live_update(res)
            self.class_mix.observe(update)  # in memory only: the class's mix without names
            latest[res.student_id] = views.redact_update(update, shown[res.mode])
        publish_class(self.r, self.class_mix.updates(self.policy))
        pipe = self.r.pipeline(transaction=False)
        for update in latest.values():
            payload = c.encoder.encode(update)
            pipe.hset(c.snapshot_key(update.session_id), update.student_id, payload)
            pipe.expire(c.snapshot_key(update.session_id), c.STATE_TTL_S)
            pipe.publish(c.live_channel(update.session_id), payload)
        pipe.execute()

    # --- loop ---------------------------------------------------------------------------------
    def handle(self, entries: list[Entry], stream: str | None = None) -> int:
        """Fold, publish and acknowledge one batch read from ``stream`` (default: the first
        results stream this aggregator owns, which must then be its only one)."""
        if stream is None and len(self.results_streams) > 1:
            raise ValueError("several results stream shards: say which stream the entries are of")
        return self.handle_parts([(stream or self.results_streams[0], entries)])

    def handle_parts(self, parts: list[tuple[str, list[Entry]]]) -> int:
        """One batch of several results stream shards: folded in one transaction, then each
        part acknowledged on its own stream."""
        entries = [e for _, part in parts for e in part]
        results, bad = [], 0
        for _, fields in entries:
            try:
                res = c.result_decoder.decode(fields[c.R_DATA])
                uuid.UUID(res.session_id), uuid.UUID(res.student_id)
                # FrameResult.v is checked here, where results are consumed: one of a schema this
                # aggregator does not know (a newer worker mid-upgrade) is malformed to it.
                if res.v != c.SCHEMA_VERSION:
                    raise ValueError(f"result schema version {res.v}")
                results.append(res)
            except (KeyError, msgspec.DecodeError, ValueError):
                bad += 1
        applied = self.commit(results)
        self.publish(applied)
        self.alerts.observe(applied)  # hook: the alert rules evaluate these sessions (tick below)
        pipe = self.r.pipeline(transaction=False)
        for stream, part in parts:
            if part:
                pipe.xack(stream, c.AGGREGATOR_GROUP, *[e[0] for e in part])
        pipe.hincrby(c.STATS_KEY, "aggregator.applied", len(applied))
        if len(results) - len(applied):
            pipe.hincrby(c.STATS_KEY, "aggregator.skipped", len(results) - len(applied))
        if bad:
            pipe.hincrby(c.STATS_KEY, "aggregator.malformed", bad)
        pipe.execute()
        return len(applied)

    def run(self, stop: threading.Event) -> None:
        backoff = Backoff()
        ready = False
        batch: list = []
        while not stop.is_set():
            try:
                if not ready:
                    ensure_groups(self.r, self.results_streams, c.AGGREGATOR_GROUP)
                    ready = True
                self.heartbeat.beat()
                if not batch:  # a batch whose commit failed is retried as is
                    batch = self.read()
                if batch:
                    self.handle_parts(batch)
                    batch = []
                self.alerts.tick()  # hook: open/close alerts, at most every 2 s (worker/alerts.py)
                backoff.reset()
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc) and "UNBLOCKED" not in str(exc):
                    raise  # else: data lost, or a stream shard deleted while read: recreate
                ready, batch = False, []
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                ready = False
                log.warning("redis unavailable (%s); retrying in %.1fs", exc, backoff.delay)
                backoff.wait(stop)
            except (OperationalError, DBAPIError) as exc:
                if not getattr(exc, "connection_invalidated", False) and not isinstance(
                    exc, OperationalError
                ):
                    raise
                log.warning("database unavailable (%s); retrying in %.1fs", exc.orig, backoff.delay)
                backoff.wait(stop)
        self.heartbeat.clear()
        log.info("aggregator %s stopped", self.name)


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
    Aggregator(settings, r, engine).run(stop)
    retention.join(5)
    engine.dispose()
    return 0
