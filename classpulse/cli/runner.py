"""`classpulse run`: everything on one machine: the embedded PostgreSQL and Redis (unless
configured), the migrations, then the gateway, the workers and the aggregator as supervised
child processes, each restarted with backoff when it dies."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from classpulse.cli import lan
from classpulse.cli.services import bootstrap_admin, settings_from, without_signing_key

log = logging.getLogger("classpulse")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="everything on one machine (embedded PostgreSQL/Redis by default)"
    )
    p.add_argument("--host", help="listen address (default CLASSPULSE_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default CLASSPULSE_PORT or 8000)")
    p.add_argument("--workers", type=int, default=1, help="inference worker processes")
    lan.add_arguments(p)  # --lan, --tls-cert/--tls-key, --tls-name, --http-port
    p.set_defaults(func=cmd_run)


@dataclass
class Child:
    """A supervised service process, restarted with backoff when it dies."""

    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL)
        self.started_at = time.monotonic()

    def check(self, now: float) -> None:
        if self.proc is None:
            if now >= self.next_start:
                self.start()
            return
        code = self.proc.poll()
        if code is None:
            if now - self.started_at > 60:
                self.restarts = 0  # ran fine for a minute: forget earlier crashes
            return
        delay = min(30.0, 0.5 * 2**self.restarts)
        self.restarts += 1
        log.warning("%s exited with code %s; restarting in %.1fs", self.name, code, delay)
        self.proc, self.next_start = None, now + delay


def cmd_run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    from classpulse.cli.embedded import EmbeddedServices
    from classpulse.migrate import upgrade

    embedded = EmbeddedServices(settings.data_dir)
    env = dict(os.environ)
    stopping = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    children: list[Child] = []
    help_page: lan.HelpServer | None = None
    try:
        if settings.database_url is None:
            env["CLASSPULSE_DATABASE_URL"] = embedded.start_postgres()
        if settings.redis_url is None:
            env["CLASSPULSE_REDIS_URL"] = embedded.start_redis()
        settings = settings.model_copy(
            update={
                "database_url": env["CLASSPULSE_DATABASE_URL"],
                "redis_url": env["CLASSPULSE_REDIS_URL"],
            }
        )
        upgrade(settings.database_url)  # type: ignore[arg-type]
        bootstrap_admin(settings)
        if (https := lan.prepare(args, settings)) is not None:  # TLS: --lan or a certificate
            settings = https.settings
            env.update(https.env)
            port = settings.lan_http_port if args.http_port is None else args.http_port
            help_page = lan.HelpServer(https, port).start() if args.lan else None
        env["CLASSPULSE_HOST"], env["CLASSPULSE_PORT"] = settings.host, str(settings.port)
        exe = [sys.executable, "-m", "classpulse"]
        keyless = without_signing_key(env)  # only the gateway signs and verifies tokens
        children = [
            Child("gateway", [*exe, "gateway"], env),
            Child("aggregator", [*exe, "aggregator"], keyless),
        ]
        children += [
            Child(f"worker-{i + 1}", [*exe, "worker"], keyless) for i in range(max(1, args.workers))
        ]
        for child in children:
            child.start()
        base = settings.public_url or f"http://{settings.host}:{settings.port}"
        print(
            f"\nClassPulse is starting at {base}\n"
            f"  teachers: {base}/login   API docs: {base}/docs   health: {base}/readyz\n"
            f"  data folder: {settings.data_dir.resolve()}\n  Ctrl-C stops everything.\n",
            flush=True,
        )
        if help_page is not None and help_page.url:
            print(f"  devices: how to trust this certificate, at {help_page.url}\n", flush=True)
        while not stopping:
            now = time.monotonic()
            for child in children:
                child.check(now)
            time.sleep(0.2)
    finally:
        if help_page is not None:
            help_page.stop()
        _stop_children(children)
        embedded.stop()
    return 0


def _stop_children(children: list[Child]) -> None:
    """SIGTERM everyone (workers finish their batch), then wait, then kill what is left."""
    for child in children:
        if child.proc and child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in children:
        if child.proc is None:
            continue
        try:
            child.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in time; killing it", child.name)
            child.proc.kill()
    log.info("all ClassPulse processes stopped")
