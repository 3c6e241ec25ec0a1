"""The aggregator's side of the privacy policy: what each result may leave behind.

- ``per_student``: per-student buckets keep the summed probabilities; so do the class buckets.
- ``aggregate_only``: per-student buckets keep presence only (frame counts, empty sums); the
  class buckets keep the sums; live per-student updates carry no emotion, and the class's mix
  is published only while at least ``min_group_size`` students show a face.
- ``off``: presence only, nowhere a probability (the worker did not run the emotion model).

The mode of a result is the stricter of the one it was analysed under and the policy in force
when it is folded, so a tightened policy holds from the next batch even for frames in flight.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

import redis
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from classpulse import contracts as c
from classpulse.policy import Policy, load, read_mirror, stricter

log = logging.getLogger(__name__)

DB_FALLBACK_S = 5.0  # without a mirror, PostgreSQL's policy is re-read at most this often
PRESENT_WINDOW_S = 10.0  # a student whose last faced frame is older no longer counts as present
CLASS_PUBLISH_S = 1.0  # at most one class update per session per second
CLASS_TTL_S = 24 * 3600

UPSERT_CLASS_BUCKET = text(
    """
    INSERT INTO class_buckets
        (session_id, bucket_start, frames, frames_with_face, prob_sums, updated_at)
    VALUES (:session_id, :bucket_start, :frames, :frames_with_face, CAST(:prob_sums AS jsonb), now())
    ON CONFLICT (session_id, bucket_start) DO UPDATE SET
        frames = class_buckets.frames + excluded.frames,
        frames_with_face = class_buckets.frames_with_face + excluded.frames_with_face,
        prob_sums = cp_jsonb_add(class_buckets.prob_sums, excluded.prob_sums),
        updated_at = now()
    """
)


@dataclass
class Delta:
    frames: int = 0
    frames_with_face: int = 0
    prob_sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))


class PolicyReader:
    """The policy in force, read from the Redis mirror once per batch (one HGETALL); without a
    mirror, from PostgreSQL. Never writes the mirror: the gateway owns it."""

    def __init__(self, r: redis.Redis, engine: Engine) -> None:
        self.r, self.engine = r, engine
        self.policy = Policy(emotion_mode="off")  # nothing inferred on a guess
        self._db_read_at = 0.0

    def current(self) -> Policy:
        mirrored = read_mirror(self.r)
        if mirrored is not None:
            self.policy = mirrored
        elif time.monotonic() - self._db_read_at > DB_FALLBACK_S:
            from sqlalchemy.orm import Session

            with Session(self.engine) as db:
                self.policy = load(db)
            self._db_read_at = time.monotonic()
        return self.policy


def apply_mode(results: list[c.FrameResult], policy: Policy) -> None:
    """Set each result's mode to the stricter of its own and the policy's; drop what it forbids."""
    for res in results:
        res.mode = stricter(res.mode, policy.emotion_mode)
        if res.mode == "off":  # e.g. analysed just before the switch: keep no probabilities
            for face in res.faces:
                face.probs = None


def largest_face(res: c.FrameResult) -> c.Face | None:
    """The student's own face: the largest (a sibling behind them is smaller). With or without
    probabilities: a face seen with emotion inference off still counts as presence."""
    return max(res.faces, key=lambda f: f.box[2] * f.box[3]) if res.faces else None


def fold(
    res: c.FrameResult,
    bucket: datetime,
    student: dict[tuple[str, str, datetime], Delta],
    klass: dict[tuple[str, datetime], Delta],
) -> None:
    """Add one result to its student's and its class's bucket deltas as its mode allows."""
    d = student[(res.session_id, res.student_id, bucket)]
    d.frames += 1
    face = largest_face(res)
    if face is not None:
        d.frames_with_face += 1
    if res.mode == "off":
        return
    k = klass[(res.session_id, bucket)]
    k.frames += 1
    if face is None:
        return
    k.frames_with_face += 1
    for label, p in (face.probs or {}).items():
        k.prob_sums[label] += p
        if res.mode == "per_student":
            d.prob_sums[label] += p


def write_class_buckets(conn: Connection, klass: dict[tuple[str, datetime], Delta]) -> None:
    if klass:
        conn.execute(
            UPSERT_CLASS_BUCKET,
            [
                {
                    "session_id": s,
                    "bucket_start": b,
                    "frames": d.frames,
                    "frames_with_face": d.frames_with_face,
                    "prob_sums": c.encoder.encode(dict(d.prob_sums)).decode(),
                }
                for (s, b), d in klass.items()
            ],
        )


def redact(update: c.LiveUpdate, mode: str) -> c.LiveUpdate:
    """The per-student update as the mode allows it to leave the aggregator."""
    if mode != "per_student":  # quality says why a label is uncertain: about the estimate too
        update.emotion = update.confidence = update.probs = update.quality = None
    return update


class ClassMix:
    """The current estimate of each present student, in memory only, to publish the class's mix
    where no per-student estimate may be shown (``aggregate_only``)."""

    def __init__(self) -> None:
        # session -> student -> (estimate or None, monotonic time of the last faced frame)
        self._seen: dict[str, dict[str, tuple[str | None, float]]] = defaultdict(dict)
        self._published: dict[str, float] = {}
        self._dirty: set[str] = set()
        self.labels: list[str] = []  # the model's label order, as the probabilities came

    def observe(self, update: c.LiveUpdate) -> None:
        """Called with the unredacted update; keeps the label only, never the probabilities."""
        if update.probs and len(update.probs) != len(self.labels):
            self.labels = list(update.probs)
        students = self._seen[update.session_id]
        if update.faces > 0:
            students[update.student_id] = (update.emotion, time.monotonic())
        else:
            students.pop(update.student_id, None)
        self._dirty.add(update.session_id)

    def updates(self, policy: Policy) -> list[c.ClassUpdate]:
        """Class updates due now (aggregate_only only; at most one per session per second).

        A session whose students all left is forgotten (``_seen``, ``_dirty``, ``_published``)
        once its last update, "nobody present", is out, or at once outside aggregate_only: the
        bookkeeping holds the sessions of the last seconds, not every session ever seen."""
        now = time.monotonic()
        out = []
        for session_id in list(self._seen):
            students = self._seen[session_id]
            for sid, (_, seen) in list(students.items()):
                if now - seen > PRESENT_WINDOW_S:
                    del students[sid]
            if policy.emotion_mode != "aggregate_only":
                if not students:
                    self._forget(session_id)
                continue
            due = now - self._published.get(session_id, 0.0) >= CLASS_PUBLISH_S
            if not due or (session_id not in self._dirty and students):
                continue  # an emptied session stays until its last update is due
            self._published[session_id] = now
            self._dirty.discard(session_id)
            present = len(students)
            if not students:
                self._forget(session_id)
            update = c.ClassUpdate(
                session_id=session_id,
                t=time.time(),
                mode=policy.emotion_mode,
                present=present,
                min_group_size=policy.min_group_size,
                suppressed=present < policy.min_group_size,
            )
            if not update.suppressed:
                counts = dict.fromkeys(self.labels, 0)
                for emotion, _ in students.values():
                    if emotion == "uncertain" or emotion is None:
                        update.uncertain += 1
                    else:
                        counts[emotion] = counts.get(emotion, 0) + 1
                update.counts = counts
            out.append(update)
        return out

    def _forget(self, session_id: str) -> None:
        self._seen.pop(session_id, None)
        self._dirty.discard(session_id)
        self._published.pop(session_id, None)


def publish_class(r: redis.Redis, updates: list[c.ClassUpdate]) -> None:
    if not updates:
        return
    pipe = r.pipeline(transaction=False)
    for u in updates:
        data = c.encoder.encode(u)
        pipe.set(c.class_live_key(u.session_id), data, ex=CLASS_TTL_S)
        pipe.publish(c.live_channel(u.session_id), data)
    pipe.execute()
