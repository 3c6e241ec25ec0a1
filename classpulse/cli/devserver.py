"""Start the whole service (`classpulse run`) on a free local port, for tests and benchmarks.

Everything is real: the same processes a deployment runs, on the PostgreSQL/Redis URLs given
or on the embedded default. Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ADMIN_EMAIL = "admin@classpulse.test"
ADMIN_PASSWORD = "admin-password-for-tests"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DevServer:
    def __init__(
        self,
        data_dir: Path,
        *,
        database_url: str | None = None,
        redis_url: str | None = None,
        workers: int = 1,
        env: dict[str, str] | None = None,
        log_file: Path | None = None,
        args: tuple[str, ...] = (),
        tls: bool = False,
    ) -> None:
        """``args``: more arguments of `classpulse run` (e.g. ``--lan``); ``tls``: the gateway
        serves HTTPS with the local CA of data_dir/tls (--lan), which requests here verify."""
        self.port = free_port()
        scheme = "https" if tls else "http"
        self.base = f"{scheme}://127.0.0.1:{self.port}"
        self.ws_base = f"{'wss' if tls else 'ws'}://127.0.0.1:{self.port}"
        self.args = tuple(args)
        self.tls = tls
        self._ssl: ssl.SSLContext | None = None
        self.data_dir = data_dir
        self.log_file = log_file or data_dir / "service.log"
        self.env = {
            **os.environ,
            "CLASSPULSE_ENV": "development",
            "CLASSPULSE_HOST": "127.0.0.1",
            "CLASSPULSE_PORT": str(self.port),
            "CLASSPULSE_DATA_DIR": str(data_dir),
            "CLASSPULSE_ADMIN_EMAIL": ADMIN_EMAIL,
            "CLASSPULSE_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "CLASSPULSE_LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        for key, value in (
            ("CLASSPULSE_DATABASE_URL", database_url),
            ("CLASSPULSE_REDIS_URL", redis_url),
        ):
            if value:
                self.env[key] = value
            else:
                self.env.pop(key, None)
        self.workers = workers
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> DevServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_file, "ab")  # noqa: SIM115 (kept open for the child's lifetime)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "classpulse", "run", "--workers", str(self.workers), *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"classpulse run exited early; see {self.log_file}:\n{self.tail()}"
                )
            try:
                if self.tls and self._ssl is None:
                    ca = self.data_dir / "tls" / "ca.pem"  # made before the gateway starts
                    if not ca.exists():
                        raise ConnectionError("no certificate yet")
                    self._ssl = ssl.create_default_context(cafile=str(ca))
                with urllib.request.urlopen(
                    self.base + "/readyz", timeout=2, context=self._ssl
                ) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(
            f"service not ready after {timeout}s; see {self.log_file}:\n{self.tail()}"
        )

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def api(
        self, method: str, path: str, body: dict | None = None, token: str | None = None
    ) -> dict:
        """A JSON request against the running gateway; raises on a non-2xx status."""
        req = urllib.request.Request(self.base + path, method=method)
        if body is not None:
            req.data = json.dumps(body).encode()
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(req, timeout=10, context=self._ssl) as resp:
            return json.loads(resp.read() or b"null")

    def login(self, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD) -> str:
        return self.api("POST", "/api/auth/login", {"email": email, "password": password})[
            "access_token"
        ]

    def __enter__(self) -> DevServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
