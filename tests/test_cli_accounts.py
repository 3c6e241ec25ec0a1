"""`classpulse create-admin` as an operator runs it: a separate process against the real database."""

from __future__ import annotations

import os
import subprocess
import sys

from sqlalchemy import select
from sqlalchemy.orm import Session

from classpulse.accounts import authenticate
from classpulse.db import User, make_engine


def _create_admin(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ, CLASSPULSE_DATABASE_URL=database_url, CLASSPULSE_NEW_PASSWORD="s3cret-pass!"
    )
    return subprocess.run(
        [sys.executable, "-m", "classpulse", "create-admin", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_create_admin_creates_a_working_account_and_refuses_a_duplicate(clean_db: str) -> None:
    done = _create_admin(clean_db, "--email", "Head@School.example", "--name", "Head")
    assert done.returncode == 0, done.stderr
    assert "created admin head@school.example" in done.stdout

    with Session(make_engine(clean_db)) as db:
        user = db.scalars(select(User)).one()
        assert (user.role, user.display_name) == ("admin", "Head")
        assert authenticate(db, "head@school.example", "s3cret-pass!") is not None

    again = _create_admin(clean_db, "--email", "head@school.example")
    assert again.returncode == 1
    assert again.stderr.startswith("error:") and "Traceback" not in again.stderr
