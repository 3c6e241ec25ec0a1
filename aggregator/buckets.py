"""Results folded into fixed time buckets, per student and per class, as each result's mode
allows, and written with one idempotent upsert statement per table (the caller's transaction
also records the applied result ids, so a replayed result never counts twice)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.engine import Connection

from aggregator.attention import observed
from classpulse import contracts as c
from classpulse import views

# Each key column's type, as the statement reads the rows (jsonb_to_recordset).
KEY_TYPES = {"session_id": "uuid", "student_id": "uuid", "bucket_start": "timestamptz"}
COUNTS = ("frames", "frames_with_face", "attention_frames", "facing_frames")


def _upsert(table: str, keys: tuple[str, ...]) -> TextClause:
    """Add each bucket's counts and probability sums to the stored ones (or insert it): one
    statement for all of a flush's buckets of ``table``, the rows as one JSON array parameter
    (msgspec encodes it in C; psycopg would dump list parameters element by element in Python),
    so PostgreSQL plans and runs it once instead of once per row. The rows' keys are distinct
    (folded per bucket beforehand): ON CONFLICT may touch a row once per statement. Sums of no
    probability (presence only) leave the stored ones as they are without calling
    cp_jsonb_add, which costs about 30 µs a call."""
    columns = ", ".join(keys)
    names = ", ".join([*keys, *COUNTS, "prob_sums"])
    types = ", ".join(
        [f"{k} {KEY_TYPES[k]}" for k in keys]
        + [f"{n} integer" for n in COUNTS]
        + ["prob_sums jsonb"]
    )
    return text(
        f"""
        INSERT INTO {table} ({names}, updated_at)
        SELECT {names}, now() FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS u({types})
        ON CONFLICT ({columns}) DO UPDATE SET
            frames = {table}.frames + excluded.frames,
            frames_with_face = {table}.frames_with_face + excluded.frames_with_face,
            attention_frames = {table}.attention_frames + excluded.attention_frames,
            facing_frames = {table}.facing_frames + excluded.facing_frames,
            prob_sums = CASE WHEN excluded.prob_sums = '{{}}'::jsonb THEN {table}.prob_sums
                             ELSE cp_jsonb_add({table}.prob_sums, excluded.prob_sums) END,
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
    faces = res.faces
    if len(faces) == 1:  # the usual case, without a key function per result
        return faces[0]
    return max(faces, key=lambda f: f.box[2] * f.box[3]) if faces else None


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
    if not face.probs:
        return
    klass_sums = k.prob_sums
    if views.shows_students(res.mode):  # kept per student only where shown per student
        student_sums = d.prob_sums
        for label, p in face.probs.items():
            klass_sums[label] += p
            student_sums[label] += p
    else:
        for label, p in face.probs.items():
            klass_sums[label] += p


def write_buckets(
    conn: Connection,
    students: dict[tuple[str, str, datetime], Delta],
    klass: dict[tuple[str, datetime], Delta],
) -> None:
    """One upsert statement per table; rows in key order, so that two aggregators writing the
    same buckets (a class's, from two shards' results) lock them in the same order."""
    for statement, keys, deltas in (
        (UPSERT_STUDENT_BUCKET, STUDENT_KEYS, students),
        (UPSERT_CLASS_BUCKET, CLASS_KEYS, klass),
    ):
        if deltas:
            conn.execute(statement, {"rows": _rows(keys, sorted(deltas.items()))})


def _rows(keys: tuple[str, ...], items: Sequence[tuple[tuple[Any, ...], Delta]]) -> str:
    """The rows as the statement's JSON array (datetimes as RFC 3339, which PostgreSQL reads)."""
    rows = []
    for key, d in items:
        row = dict(zip(keys, key, strict=True))
        row["frames"], row["frames_with_face"] = d.frames, d.frames_with_face
        row["attention_frames"], row["facing_frames"] = d.attention_frames, d.facing_frames
        row["prob_sums"] = dict(d.prob_sums)
        rows.append(row)
    return c.encoder.encode(rows).decode()
