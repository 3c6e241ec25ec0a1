"""The class's mix of expressions, published live where no per-student estimate may be shown
(``aggregate_only``), and only while enough students are present."""

from __future__ import annotations

import time
from collections import defaultdict

import redis

from classpulse import contracts as c
from classpulse.policy import Policy

PRESENT_WINDOW_S = 10.0  # a student whose last faced frame is older no longer counts as present
CLASS_PUBLISH_S = 1.0  # at most one class update per session per second


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
        pipe.set(c.class_live_key(u.session_id), data, ex=c.STATE_TTL_S)
        pipe.publish(c.live_channel(u.session_id), data)
    pipe.execute()
