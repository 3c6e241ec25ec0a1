"""Results folded into fixed time buckets, per student and per class, as each result's mode
allows, and written with one idempotent upsert per table (the caller's transaction also records
the applied result ids, so a replayed result never counts twice)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import TextClause, text
from sqlalchemy.engine import Connection

from classpulse import contracts as c
from classpulse import views
from worker.attention import observed


def _upsert(table: str, keys: tuple[str, ...]) -> TextClause:
    """Add a bucket's counts and probability sums to the stored ones (or insert it)."""
    columns = ", ".join(keys)
    values = ", ".join(f":{k}" for k in keys)
    return text(
        f"""
        INSERT INTO {table}
            ({columns}, frames, frames_with_face, prob_sums, attention_frames, facing_frames,
             updated_at)
        VALUES ({values}, :frames, :frames_with_face, CAST(:prob_sums AS jsonb),
                :attention_frames, :facing_frames, now())
        ON CONFLICT ({columns}) DO UPDATE SET
            frames = {table}.frames + excluded.frames,
            frames_with_face = {table}.frames_with_face + excluded.frames_with_face,
            attention_frames = {table}.attention_frames + excluded.attention_frames,
            facing_frames = {table}.facing_frames + excluded.facing_frames,
            prob_sums = cp_jsonb_add({table}.prob_sums, excluded.prob_sums),
            updated_at = now()
        """
    )


STUDENT_KEYS = ("session_id", "student_id", "bucket_start")
CLASS_KEYS = ("session_id", "bucket_start")
UPSERT_STUDENT_BUCKET = _upsert("emotion_buckets", STUDENT_KEYS)
UPSERT_CLASS_BUCKET = _upsert("class_buckets", CLASS_KEYS)


@dataclass
class Delta:
    frames: int = 0
    frames_with_face: int = 0
    prob_sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    attention_frames: int = 0  # faced frames whose head orientation was observed
    facing_frames: int = 0  # of those, facing the screen

    def observe(self, faces: bool | None) -> None:
        if faces is not None:
            self.attention_frames += 1
            self.facing_frames += faces


def main_face(res: c.FrameResult) -> c.Face | None:
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
    face = main_face(res)
    # None unless attention is observed (apply_mode took yaw/pitch away otherwise): any mode.
    faces = observed(face)
    d.observe(faces)
    if face is not None:
        d.frames_with_face += 1
    if res.mode == "off":  # no class bucket: a report sums the students' attention instead
        return
    k = klass[(res.session_id, bucket)]
    k.frames += 1
    if face is None:
        return
    k.frames_with_face += 1
    k.observe(faces)
    for label, p in (face.probs or {}).items():
        k.prob_sums[label] += p
        if views.shows_students(res.mode):  # kept per student only where shown per student
            d.prob_sums[label] += p


def write_buckets(
    conn: Connection,
    students: dict[tuple[str, str, datetime], Delta],
    klass: dict[tuple[str, datetime], Delta],
) -> None:
    for statement, keys, deltas in (
        (UPSERT_STUDENT_BUCKET, STUDENT_KEYS, students),
        (UPSERT_CLASS_BUCKET, CLASS_KEYS, klass),
    ):
        if deltas:
            conn.execute(statement, [_row(keys, key, d) for key, d in deltas.items()])


def _row(keys: tuple[str, ...], key: tuple[object, ...], d: Delta) -> dict[str, object]:
    return {
        **dict(zip(keys, key, strict=True)),
        "frames": d.frames,
        "frames_with_face": d.frames_with_face,
        "prob_sums": c.encoder.encode(dict(d.prob_sums)).decode(),
        "attention_frames": d.attention_frames,
        "facing_frames": d.facing_frames,
    }
