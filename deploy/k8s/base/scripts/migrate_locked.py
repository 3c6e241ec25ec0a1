"""``classpulse migrate`` under a PostgreSQL advisory lock: the migrate init container of every
new gateway and aggregator pod runs it, and pods that start together take turns instead of
applying the same migration at once (the second finds the schema at head and does nothing).

    python migrate_locked.py        (CLASSPULSE_DATABASE_URL and the other settings from env)
"""

from __future__ import annotations

import sys

from sqlalchemy import pool, text

from classpulse.cli import main as classpulse
from classpulse.db import make_engine
from classpulse.settings import keyless_settings

LOCK_ID = 0x43505F4D4947  # "CP_MIG": any constant, the same in every pod


def main() -> int:
    url = keyless_settings().database_url  # no signing key here: it signs nothing
    if not url:
        sys.stderr.write("error: CLASSPULSE_DATABASE_URL not set\n")
        return 2
    engine = make_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            # A session lock on this connection, held while `classpulse migrate` runs on its
            # own connection; released by the unlock, or by PostgreSQL if this process dies.
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_ID})
            conn.commit()
            try:
                return classpulse(["migrate"])
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_ID})
                conn.commit()
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
