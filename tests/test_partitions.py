"""The bucket tables partitioned by day (migration 0006, records/partitions.py): the migration
keeps every row, partitions exist ahead of time, retention drops whole old days and deletes
exactly what is older than the cut-off in the rest, upserts land in their day's partition and
rows no day covers land in the DEFAULT partition, which retention still empties."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
from alembic import command

from aggregator.buckets import Delta, write_buckets
from classpulse.db import make_engine
from classpulse.migrate import alembic_config, upgrade
from records import partitions
from records.retention import purge
from tests.conftest import ADMIN_URL
from tests.db_helpers import NOW, sql, sql_exec

TODAY = NOW.date()


def _start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _where(settings, table: str) -> dict[str, int]:
    """Rows per partition."""
    return dict(sql(settings, f"SELECT tableoid::regclass::text, count(*) FROM {table} GROUP BY 1"))


def _names(engine, table: str) -> set[str]:
    with engine.connect() as conn:
        return {p.name for p in partitions.list_partitions(conn, table) or []}


def _bucket(settings, roster, student: str, at: datetime, frames: int = 1) -> None:
    sql_exec(
        settings,
        "INSERT INTO emotion_buckets (session_id, student_id, bucket_start, frames,"
        " frames_with_face, prob_sums) VALUES (%s, %s, %s, %s, %s, '{\"happy\": 0.5}')",
        roster["session"],
        roster[student],
        at,
        frames,
        frames,
    )
    sql_exec(
        settings,
        "INSERT INTO class_buckets (session_id, bucket_start, frames, frames_with_face,"
        " prob_sums) VALUES (%s, %s, %s, %s, '{}') ON CONFLICT DO NOTHING",
        roster["session"],
        at,
        frames,
        frames,
    )


@pytest.fixture
def past_days(settings, engine) -> Iterator[None]:
    """The default 30 days' retention; afterwards, drop the daily partitions of past days the
    test made (the database outlives the test)."""
    sql_exec(settings, "UPDATE org_policy SET retention_days = 30")
    yield
    with engine.begin() as conn:
        for table in partitions.TABLES:
            for p in partitions.list_partitions(conn, table) or []:
                if p.day is not None and p.day < TODAY:
                    conn.exec_driver_sql(f"DROP TABLE {partitions.quoted(p.name)}")


# --- the migration -----------------------------------------------------------------------------
@pytest.fixture
def db_at_0005() -> Iterator[str]:
    """A database of its own, migrated up to the revision before the partitioning."""
    name = f"cp_test_part_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(ADMIN_URL, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        upgrade(url, "0005")
        yield url
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _fill_plain(url: str) -> None:
    """Two sessions, three students, buckets every 7 minutes over 12 days up to tomorrow, and
    one far in the past."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO users (id, email, password_hash) VALUES (1, 'a@b.example', 'x')")
        sessions = [str(uuid.uuid4()) for _ in range(2)]
        students = [(str(uuid.uuid4()), sessions[i % 2]) for i in range(3)]
        for i, s in enumerate(sessions):
            conn.execute(
                "INSERT INTO class_sessions (id, owner_id, title, join_code) VALUES (%s, 1, 't', %s)",
                (s, f"CODE{i}"),
            )
        for st, s in students:
            conn.execute(
                "INSERT INTO students (id, session_id, display_name) VALUES (%s, %s, 'x')", (st, s)
            )
            conn.execute(
                "INSERT INTO emotion_buckets (session_id, student_id, bucket_start, frames,"
                " frames_with_face, prob_sums) SELECT %s, %s,"
                " date_trunc('minute', now()) + interval '1 day' - g * interval '7 minutes',"
                " g %% 11, g %% 7, jsonb_build_object('happy', g * 0.5)"
                " FROM generate_series(0, 12 * 24 * 60 / 7) g",
                (s, st),
            )
            conn.execute(
                "INSERT INTO emotion_buckets (session_id, student_id, bucket_start, frames)"
                " VALUES (%s, %s, now() - interval '400 days', 3)",
                (s, st),
            )
        for s in sessions:
            conn.execute(
                "INSERT INTO class_buckets (session_id, bucket_start, frames, prob_sums)"
                " SELECT %s, date_trunc('minute', now()) - g * interval '5 minutes', g,"
                " jsonb_build_object('sad', g) FROM generate_series(0, 5 * 24 * 12) g",
                (s,),
            )


_SUMMARY = {
    "emotion_buckets": "SELECT count(*), sum(frames), sum(frames_with_face),"
    " sum((prob_sums->>'happy')::float8), min(bucket_start), max(bucket_start),"
    " count(DISTINCT (session_id, student_id)) FROM emotion_buckets",
    "class_buckets": "SELECT count(*), sum(frames), sum((prob_sums->>'sad')::float8),"
    " min(bucket_start), max(bucket_start) FROM class_buckets",
}


def _summary(url: str) -> dict[str, tuple]:
    with psycopg.connect(url) as conn:
        return {t: conn.execute(q).fetchone() for t, q in _SUMMARY.items()}


def _relkind(url: str, table: str) -> str:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT relkind FROM pg_class WHERE relname = %s", (table,)).fetchone()[
            0
        ]


def test_the_migration_partitions_existing_rows_and_the_downgrade_undoes_it(db_at_0005):
    url = db_at_0005
    _fill_plain(url)
    before = _summary(url)
    assert before["emotion_buckets"][0] > 7000
    engine = make_engine(url)
    try:
        # Before the migration retention deletes from the plain tables, as it always did.
        assert purge(engine)["emotion_buckets"] == 3
        sql_exec_url(
            url,
            "INSERT INTO emotion_buckets (session_id, student_id, bucket_start, frames)"
            " SELECT session_id, id, now() - interval '400 days', 3 FROM students",
        )
        before = _summary(url)

        upgrade(url)
        assert _relkind(url, "emotion_buckets") == "p" and _relkind(url, "class_buckets") == "p"
        assert _summary(url) == before  # every row, every value
        with psycopg.connect(url) as conn:
            placed = conn.execute(
                "SELECT tableoid::regclass::text, (min(bucket_start) AT TIME ZONE 'UTC')::date,"
                " (max(bucket_start) AT TIME ZONE 'UTC')::date FROM emotion_buckets GROUP BY 1"
            ).fetchall()
        for name, lo, hi in placed:  # each row in its day's partition
            assert lo == hi and name == partitions.day_name("emotion_buckets", lo), name
        names = _names(engine, "emotion_buckets")
        today = datetime.now(UTC).date()
        for i in range(partitions.DAYS_AHEAD + 1):  # and the coming days are ready
            assert partitions.day_name("emotion_buckets", today + timedelta(days=i)) in names
            assert partitions.day_name("class_buckets", today + timedelta(days=i)) in _names(
                engine, "class_buckets"
            )
        assert {"emotion_buckets_default"} <= names
        with psycopg.connect(url) as conn:  # same constraints, under the same names
            cons = conn.execute(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE conrelid = 'emotion_buckets'::regclass ORDER BY 1"
            ).fetchall()
        assert [n for n, _ in cons] == [
            "emotion_buckets_pkey",
            "emotion_buckets_session_id_fkey",
            "emotion_buckets_student_id_fkey",
        ]
        assert all("ON DELETE CASCADE" in d for n, d in cons if n.endswith("fkey"))

        # The cascade from students reaches every partition.
        with psycopg.connect(url, autocommit=True) as conn:
            (one,) = conn.execute("SELECT id FROM students LIMIT 1").fetchone()
            conn.execute("DELETE FROM students WHERE id = %s", (one,))
            assert conn.execute(
                "SELECT count(*) FROM emotion_buckets WHERE student_id = %s", (one,)
            ).fetchone() == (0,)
        after_cascade = _summary(url)

        command.downgrade(alembic_config(url), "0005")
        assert _relkind(url, "emotion_buckets") == "r" and _relkind(url, "class_buckets") == "r"
        assert _summary(url) == after_cascade
        with psycopg.connect(url) as conn:
            assert not conn.execute(
                "SELECT relname FROM pg_class WHERE relname ~ '^emotion_buckets_p[0-9]{8}$'"
            ).fetchall()
        upgrade(url)
        assert _summary(url) == after_cascade
    finally:
        engine.dispose()


def sql_exec_url(url: str, query: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(query)


# --- partitions ahead --------------------------------------------------------------------------
def test_partitions_are_made_ahead_once(engine):
    far = TODAY + timedelta(days=200)
    made = partitions.ensure(engine, far, days_ahead=2)
    try:
        expected = [
            partitions.day_name(t, far + timedelta(days=i))
            for t in partitions.TABLES
            for i in range(3)
        ]
        assert made == expected
        assert partitions.ensure(engine, far, days_ahead=2) == []
        for i in range(partitions.DAYS_AHEAD + 1):  # the migration made today's and the next
            day = TODAY + timedelta(days=i)
            assert partitions.day_name("emotion_buckets", day) in _names(engine, "emotion_buckets")
    finally:
        with engine.begin() as conn:
            for name in made:
                conn.exec_driver_sql(f"DROP TABLE {partitions.quoted(name)}")


def test_upserts_land_in_their_days_partition_or_the_default(settings, engine, roster):
    in_3_days = _start(TODAY + timedelta(days=3)) + timedelta(hours=9, seconds=35)
    nowhere = _start(TODAY + timedelta(days=300)) + timedelta(hours=9)  # no partition that far
    for _ in range(2):  # the second time, ON CONFLICT adds to the stored rows
        student: dict = defaultdict(Delta)
        klass: dict = defaultdict(Delta)
        for at in (in_3_days, nowhere):
            d = student[(roster["session"], roster["ada"], at)]
            d.frames, d.frames_with_face, d.prob_sums["happy"] = 10, 9, 4.5
            k = klass[(roster["session"], at)]
            k.frames, k.frames_with_face, k.prob_sums["happy"] = 20, 18, 9.0
        with engine.begin() as conn:
            write_buckets(conn, student, klass)
    assert sorted(
        sql(
            settings,
            "SELECT tableoid::regclass::text, frames, frames_with_face,"
            " (prob_sums->>'happy')::float8"
            " FROM emotion_buckets",
        )
    ) == [
        ("emotion_buckets_default", 20, 18, 9.0),
        (partitions.day_name("emotion_buckets", in_3_days.date()), 20, 18, 9.0),
    ]
    assert _where(settings, "class_buckets") == {
        "class_buckets_default": 1,
        partitions.day_name("class_buckets", in_3_days.date()): 1,
    }
    # A day whose rows are in the DEFAULT partition gets no partition of its own (it could not
    # take that range); the next day does.
    made = partitions.ensure(engine, nowhere.date(), days_ahead=1)
    try:
        assert made == [
            partitions.day_name("emotion_buckets", nowhere.date() + timedelta(days=1)),
            partitions.day_name("class_buckets", nowhere.date() + timedelta(days=1)),
        ]
        assert _where(settings, "emotion_buckets")["emotion_buckets_default"] == 1
    finally:
        with engine.begin() as conn:
            for name in made:
                conn.exec_driver_sql(f"DROP TABLE {partitions.quoted(name)}")


# --- retention ---------------------------------------------------------------------------------
def _old_days(settings, engine, roster) -> dict:
    """Partitions for the 12 days around the cut-off (30 days back); rows two days before it
    (a whole day gone), either side of the cut-off in its own day, two days after it, and 60
    days back (no partition: the DEFAULT one)."""
    cutoff = NOW - timedelta(days=30)
    day = cutoff.date()
    partitions.ensure(engine, day - timedelta(days=5), days_ahead=10)
    lo = _start(day)
    at = {
        "whole day": cutoff - timedelta(days=2),
        "before cut-off": lo + (cutoff - lo) / 2,
        "after cut-off": cutoff + (lo + timedelta(days=1) - cutoff) / 2,
        "kept": cutoff + timedelta(days=2),
        "default": NOW - timedelta(days=60),
    }
    for what, when in at.items():
        _bucket(settings, roster, "ada", when, frames=3)
        if what == "whole day":
            _bucket(settings, roster, "bo", when + timedelta(seconds=5))
    return {"cutoff": cutoff, "at": at}


def test_retention_drops_whole_days_and_deletes_exactly_the_rest(
    settings, engine, roster, past_days
):
    k = _old_days(settings, engine, roster)
    cutoff, at = k["cutoff"], k["at"]
    gone_day = partitions.day_name("emotion_buckets", at["whole day"].date())
    boundary = partitions.day_name("emotion_buckets", cutoff.date())
    older_days = {
        partitions.day_name("emotion_buckets", cutoff.date() - timedelta(days=i))
        for i in range(1, 6)
    }
    assert _where(settings, "emotion_buckets")[gone_day] == 2
    assert _where(settings, "emotion_buckets")["emotion_buckets_default"] == 1

    counts = purge(engine, NOW)
    # Two in the dropped day, one before the cut-off in its day, one in DEFAULT.
    assert counts["emotion_buckets"] == 4
    assert counts["class_buckets"] == 4
    names = _names(engine, "emotion_buckets")
    assert not older_days & names  # every day wholly before the cut-off is gone
    assert boundary in names
    assert not {partitions.day_name("class_buckets", d) for d in (at["whole day"].date(),)} & (
        _names(engine, "class_buckets")
    )
    kept = sorted(r[0] for r in sql(settings, "SELECT bucket_start FROM emotion_buckets"))
    assert kept == [at["after cut-off"], at["kept"]]
    assert min(r[0] for r in sql(settings, "SELECT bucket_start FROM class_buckets")) >= cutoff
    assert purge(engine, NOW)["emotion_buckets"] == 0  # nothing more to do


def test_whole_days_leaves_the_cut_off_day_for_its_drop(settings, engine, roster, past_days):
    k = _old_days(settings, engine, roster)
    cutoff, at = k["cutoff"], k["at"]
    counts = purge(engine, NOW, whole_days=True)
    assert counts["emotion_buckets"] == 3  # the dropped day's two and the DEFAULT's one
    kept = sorted(r[0] for r in sql(settings, "SELECT bucket_start FROM emotion_buckets"))
    assert kept == [at["before cut-off"], at["after cut-off"], at["kept"]]
    # The next day, the whole day the cut-off was in goes with its partition.
    counts = purge(engine, _start(cutoff.date() + timedelta(days=1)) + timedelta(days=30))
    assert counts["emotion_buckets"] == 2
    assert partitions.day_name("emotion_buckets", cutoff.date()) not in _names(
        engine, "emotion_buckets"
    )
    assert [r[0] for r in sql(settings, "SELECT bucket_start FROM emotion_buckets")] == [at["kept"]]


def test_another_process_sweeping_leaves_the_buckets_to_it(settings, engine, roster, past_days):
    _old_days(settings, engine, roster)
    with partitions.maintenance(engine) as held:
        assert held
        counts = purge(engine, NOW)  # the lock is taken: this sweep leaves the buckets alone
    assert counts["emotion_buckets"] == 0 and counts["class_buckets"] == 0
    assert purge(engine, NOW)["emotion_buckets"] == 4
