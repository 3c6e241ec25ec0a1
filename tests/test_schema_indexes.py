"""Indexes the models declare are the ones the migrations create, and lookups use them."""

from __future__ import annotations

import re

import psycopg
from sqlalchemy import inspect

from classpulse.db import Base


# --- 1. indexes: models and migrations agree ---------------------------------------------------
def test_models_declare_the_indexes_the_migrations_create(engine):
    insp = inspect(engine)
    for table in ("emotion_buckets", "class_buckets", "alerts"):
        in_db = {ix["name"]: ix["column_names"] for ix in insp.get_indexes(table)}
        in_model = {
            ix.name: [col.name for col in ix.columns] for ix in Base.metadata.tables[table].indexes
        }
        assert in_db == in_model, table
    assert insp.get_indexes("emotion_buckets") and {
        "ix_emotion_buckets_student_id",
        "ix_emotion_buckets_bucket_start",
    } <= {ix["name"] for ix in insp.get_indexes("emotion_buckets")}
    assert "ix_alerts_student_id" in {ix["name"] for ix in insp.get_indexes("alerts")}
    columns = {col["name"] for col in insp.get_columns("org_policy")}
    assert "version" in columns and "version" in Base.metadata.tables["org_policy"].columns


def test_a_students_buckets_are_found_by_index(settings, roster):
    """The lookups by student (the FK cascade's among them) no longer read the whole table:
    each daily partition (migration 0006) by its copy of ``ix_emotion_buckets_student_id``."""
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN SELECT 1 FROM emotion_buckets WHERE student_id = %s", (roster["ada"],)
            )
        )
        copies = {
            r[0]
            for r in conn.execute(
                "SELECT inhrelid::regclass::text FROM pg_inherits"
                " WHERE inhparent = 'ix_emotion_buckets_student_id'::regclass"
            )
        }
    # The index each partition is read by: a bitmap scan names it after "on", an index (only)
    # scan after "using" (which the planner picks depends on the table's visibility map).
    scanned = set(re.findall(r"(?:Bitmap Index Scan on|Index (?:Only )?Scan using) (\S+)", plan))
    assert "Seq Scan" not in plan and scanned and scanned <= copies, plan
    assert "emotion_buckets_default_student_id_idx" in scanned, plan


def test_models_declare_the_columns_the_migrations_create(engine):
    """Every column of the tables attention touched (migration 0007) is in the model, with the
    same nullability and a server default where the migration gives one (so rows written by an
    older release, which does not name the new columns, get it)."""
    insp = inspect(engine)
    for table in ("org_policy", "emotion_buckets", "class_buckets"):
        in_db = {col["name"]: col for col in insp.get_columns(table)}
        in_model = Base.metadata.tables[table].columns
        assert set(in_db) == {col.name for col in in_model}, table
    for table, columns in (
        ("org_policy", ("attention",)),
        ("emotion_buckets", ("attention_frames", "facing_frames")),
        ("class_buckets", ("attention_frames", "facing_frames")),
    ):
        db_columns = {col["name"]: col for col in insp.get_columns(table)}
        for name in columns:
            assert not db_columns[name]["nullable"] and db_columns[name]["default"], (table, name)
            assert Base.metadata.tables[table].columns[name].server_default is not None
