"""Each student's live state in the aggregator: the smoothed estimate of their recent faced
frames, the frame count, attention's ring, and the LiveUpdate built from it.

Split in two steps so that a flush pays the update's cost once per student, not per result:
``step`` folds one result into the state (every result, in receive order), ``build`` makes the
update of the student's latest result. Plain floats, not numpy: on seven probabilities numpy's
per-call overhead cost more than the arithmetic (the results are the same IEEE operations).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aggregator.attention import AttentionState, observed
from aggregator.buckets import main_face
from classpulse import contracts as c

RESUME_GAP_MS = 10_000  # a student's frames this far apart: the stream paused, start afresh
MIN_STREAK = 2  # faced frames after a (re)start before a label is shown
STATE_IDLE_S = 300.0  # a student's smoothing state unused this long is dropped (memory bound)


@dataclass(slots=True)
class StudentState:
    """Exponentially smoothed probabilities of one student's recent faced frames."""

    probs: list[float] | None = None
    labels: tuple[str, ...] = ()
    frames: int = 0
    last_ms: float = 0.0  # receive time of the latest frame, to notice a stream that paused
    streak: int = 0  # faced frames since the stream (re)started
    used: float = 0.0  # monotonic time this process last updated it, to drop idle states
    attention: AttentionState | None = None  # made at the first observed orientation


@dataclass(slots=True)
class Step:
    """One result as folded into its student's state: what ``build`` needs of it."""

    res: c.FrameResult
    face: c.Face | None
    faces: bool | None  # facing the screen; None when the orientation was not observed


def step(state: StudentState, res: c.FrameResult, alpha: float, now: float) -> Step:
    """Fold one result into ``state`` (smoothing, counts). Attention is left to the caller:
    ``AttentionState.add`` for a result whose update is not built, ``build`` for the one that
    is (its ``fill`` adds the observation itself)."""
    state.frames += 1
    state.used = now
    if res.received_ms - state.last_ms > RESUME_GAP_MS:  # smoothing must not bridge a pause
        state.probs, state.streak = None, 0
    state.last_ms = max(state.last_ms, res.received_ms)
    face = main_face(res)
    faces = observed(face)  # None unless the policy and the result both observe attention
    if faces is not None and state.attention is None:
        state.attention = AttentionState()
    if face is not None and face.probs:
        state.streak += 1
        labels = tuple(face.probs)
        p = list(face.probs.values())
        if state.probs is None or state.labels != labels:
            state.probs, state.labels = p, labels
        else:
            b = 1 - alpha
            state.probs = [alpha * x + b * s for x, s in zip(p, state.probs, strict=True)]
    return Step(res, face, faces)


def add_attention(state: StudentState, s: Step) -> None:
    """The observation of a result whose update is not built (a later one of the student's is)."""
    if s.faces is not None and state.attention is not None:
        state.attention.add(s.faces, s.res.received_ms)


def build(state: StudentState, s: Step, uncertain_below: float, small_face_px: int) -> c.LiveUpdate:
    """The update of ``s``, the latest result ``step`` folded into ``state``."""
    res, face = s.res, s.face
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
    if state.attention is not None:
        state.attention.fill(update, s.faces, res.received_ms)
    if face is None or not face.probs or state.probs is None:
        update.presence = "no_face" if not res.faces else "present"
        return update
    probs, labels = state.probs, state.labels
    k = max(range(len(probs)), key=probs.__getitem__)  # the first of equals, as numpy's argmax
    update.confidence = round(probs[k], 4)
    update.emotion = labels[k] if update.confidence >= uncertain_below else "uncertain"
    update.probs = {label: round(v, 4) for label, v in zip(labels, probs, strict=True)}
    # Never a bare label when the estimate can't carry one: say why it is uncertain.
    if min(face.box[2], face.box[3]) < small_face_px:
        update.emotion, update.quality = "uncertain", "face_too_small"
    elif state.streak < MIN_STREAK:
        update.emotion, update.quality = "uncertain", "few_frames"
    elif update.emotion == "uncertain":
        update.quality = "low_confidence"
    return update
