"""The aggregator's side of the privacy policy: which mode each result is folded under (what a
live update may carry out of the aggregator is ``classpulse.views``'s rule).

- ``per_student``: per-student buckets keep the summed probabilities; so do the class buckets.
- ``aggregate_only``: per-student buckets keep presence only (frame counts, empty sums); the
  class buckets keep the sums; live per-student updates carry no emotion, and the class's mix
  is published only while at least ``min_group_size`` students show a face.
- ``off``: presence only, nowhere a probability (the worker did not run the emotion model).
- attention (``Policy.attention``, any mode): per-student and class buckets count the frames
  whose head orientation was observed and those facing the screen; live updates carry it.

The mode of a result is the stricter of the one it was analysed under and the policy in force
when it is folded, so a tightened policy holds from the next batch even for frames in flight.
"""

from __future__ import annotations

import time

import redis
from sqlalchemy.engine import Engine

from classpulse import contracts as c
from classpulse.policy import Policy, load, read_mirror, stricter

DB_FALLBACK_S = 5.0  # without a mirror, PostgreSQL's policy is re-read at most this often


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
    """Set each result's mode to the stricter of its own and the policy's; drop what it forbids:
    probabilities under ``off``, head orientation while the policy does not observe attention
    (a result carries it only if its frame was taken while it did: the stricter wins)."""
    for res in results:
        res.mode = stricter(res.mode, policy.emotion_mode)
        if res.mode == "off":  # e.g. analysed just before the switch: keep no probabilities
            for face in res.faces:
                face.probs = None
        if not policy.attention:
            for face in res.faces:
                face.yaw = face.pitch = None
