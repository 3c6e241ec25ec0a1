"""emotion_buckets and class_buckets partitioned by day (RANGE on bucket_start, UTC days).

Retention then retires a whole day by dropping its partition (no row-by-row DELETE, no WAL per
row, no bloat left behind) instead of deleting tens of millions of rows in batches
(docs/retention.md has the measurements). Each table gets one partition per UTC day holding
existing rows, one for today and the next ``DAYS_AHEAD`` days, and a DEFAULT partition that takes
any row no daily partition covers (retention still deletes those, row by row). The existing rows
are copied over (one INSERT ... SELECT per table, inside the migration's transaction, which holds
the tables' locks while it runs; docs/retention.md has its time), then the primary keys (which
already include ``bucket_start``), the indexes and the foreign keys with ``ON DELETE CASCADE``
are built on the partitioned tables, under the same names as before.
``records/partitions.py`` keeps partitions created ahead and retires old ones; its naming
(``<table>_pYYYYMMDD``, ``<table>_default``) is repeated here so the migration stays as it is
when the code moves on.

The downgrade copies the rows back into plain tables.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from datetime import UTC, date, datetime, timedelta

from alembic import op
from sqlalchemy import text

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

DAYS_AHEAD = 7  # records.partitions.DAYS_AHEAD when this was written

COLUMNS = "frames, frames_with_face, prob_sums, updated_at"
# table: (key columns, indexes besides the primary key, foreign keys (column, table))
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, str], ...]]] = {
    "emotion_buckets": (
        ("session_id", "student_id", "bucket_start"),
        ("bucket_start", "student_id"),
        (("session_id", "class_sessions"), ("student_id", "students")),
    ),
    "class_buckets": (
        ("session_id", "bucket_start"),
        ("bucket_start",),
        (("session_id", "class_sessions"),),
    ),
}
KEY_TYPES = {"session_id": "uuid", "student_id": "uuid", "bucket_start": "timestamptz"}


def _create(table: str, partitioned: bool) -> None:
    """The table without its keys and indexes: ``_constrain`` adds them once the rows are in
    (one sort per index and one join per foreign key, far faster than row by row)."""
    keys, _, _ = TABLES[table]
    columns = ",\n".join(f"{k} {KEY_TYPES[k]} NOT NULL" for k in keys)
    tail = " PARTITION BY RANGE (bucket_start)" if partitioned else ""
    op.execute(
        f"""CREATE TABLE {table} (
        {columns},
        frames integer NOT NULL DEFAULT 0,
        frames_with_face integer NOT NULL DEFAULT 0,
        prob_sums jsonb NOT NULL DEFAULT '{{}}'::jsonb,
        updated_at timestamptz NOT NULL DEFAULT now()
        ){tail}"""
    )


def _constrain(table: str) -> None:
    keys, indexes, fks = TABLES[table]
    op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY ({', '.join(keys)})")
    for col in indexes:
        op.execute(f"CREATE INDEX ix_{table}_{col} ON {table} ({col})")
    for col, target in fks:
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {table}_{col}_fkey FOREIGN KEY ({col})"
            f" REFERENCES {target} (id) ON DELETE CASCADE"
        )


def _copy(table: str, source: str) -> None:
    keys, _, _ = TABLES[table]
    cols = ", ".join(keys) + ", " + COLUMNS
    op.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {source}")  # noqa: S608
    op.execute(f"DROP TABLE {source}")  # a partitioned one with its partitions
    _constrain(table)
    op.execute(f"ANALYZE {table}")


def _free_names(table: str, suffix: str) -> None:
    """Rename ``table`` and its indexes (index names are unique per schema) out of the way."""
    _, indexes, _ = TABLES[table]
    op.execute(f"ALTER TABLE {table} RENAME TO {table}_{suffix}")
    op.execute(f"ALTER INDEX {table}_pkey RENAME TO {table}_{suffix}_pkey")
    for col in indexes:
        op.execute(f"ALTER INDEX ix_{table}_{col} RENAME TO ix_{table}_{suffix}_{col}")


def _day_partition(table: str, day: date) -> None:
    lo = datetime(day.year, day.month, day.day, tzinfo=UTC)
    hi = lo + timedelta(days=1)
    op.execute(
        f"CREATE TABLE IF NOT EXISTS {table}_p{day:%Y%m%d} PARTITION OF {table}"
        f" FOR VALUES FROM ('{lo.isoformat()}') TO ('{hi.isoformat()}')"
    )


def upgrade() -> None:
    today = datetime.now(UTC).date()
    conn = op.get_bind()
    for table in TABLES:
        _free_names(table, "unpartitioned")
        _create(table, partitioned=True)
        days = {
            row[0]
            for row in conn.execute(
                text(
                    "SELECT DISTINCT (bucket_start AT TIME ZONE 'UTC')::date"  # noqa: S608
                    f" FROM {table}_unpartitioned"
                )
            )
        }
        days |= {today + timedelta(days=i) for i in range(DAYS_AHEAD + 1)}
        for day in sorted(days):
            _day_partition(table, day)
        op.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
        _copy(table, f"{table}_unpartitioned")


def downgrade() -> None:
    for table in TABLES:
        _free_names(table, "partitioned")
        _create(table, partitioned=False)
        _copy(table, f"{table}_partitioned")
