"""Apply the Alembic migrations programmatically (`classpulse migrate`, `classpulse run`)."""

from __future__ import annotations

import logging

from alembic import command
from alembic.config import Config

from classpulse.settings import REPO_ROOT

log = logging.getLogger(__name__)


def alembic_config(database_url: str) -> Config:
    cfg = Config(str(REPO_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    log.info("applying database migrations up to %s", revision)
    command.upgrade(alembic_config(database_url), revision)
