"""Schemathesis over the whole HTTP API, longer than CI: figures for the security note.

    .venv/bin/python bench/fuzz_api.py [--examples 200] [--hostile-examples 5] [--seconds 1800]
        [--only /api/admin] [--identities admin,teacher,student,anonymous] [--extra-checks]
        [--report FILE]

The harness is tests/fuzz_harness.py, the one tests/test_fuzz_api.py runs with a few examples:
the real gateway served by uvicorn on 127.0.0.1, every operation of /openapi.json fuzzed as each
identity on fresh data, positive, negative and hostile cases (NUL, int8 overflow, the calendar's
ends). --extra-checks adds status_code_conformance and content_type_conformance, reported but
not failing the run (see tests/fuzz_harness.py for why). Runs on a database of its own (created from
--database-url's server, dropped at the end) and the given Redis database, which is flushed
(default 15, the benchmarks'). Prints operations, cases, failures per check and wall time, then
each distinct failure with a curl line and the server's traceback; exits 1 when any was found.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classpulse.migrate import upgrade  # noqa: E402
from tests.fuzz_harness import (  # noqa: E402
    EXTRA_CHECKS,
    GATING_CHECKS,
    IDENTITIES,
    fuzz_settings,
    fuzzer,
)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=200, help="per operation, identity and mode")
    ap.add_argument(
        "--hostile-examples", type=int, default=5, help="per hostile value, operation, identity"
    )
    ap.add_argument("--seconds", type=float, default=1800, help="bound on the whole run")
    ap.add_argument("--only", help="fuzz only operations whose label contains this")
    ap.add_argument("--identities", default=",".join(IDENTITIES))
    ap.add_argument(
        "--extra-checks",
        action="store_true",
        help="also status_code_conformance and content_type_conformance (informational)",
    )
    ap.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    ap.add_argument("--report", type=Path, help="also write the failures to this file")
    args = ap.parse_args()

    name = f"cp_fuzz_{uuid.uuid4().hex[:12]}"
    admin = psycopg.connect(args.database_url, autocommit=True, connect_timeout=5)
    admin.execute(f'CREATE DATABASE "{name}"')
    url = args.database_url.rsplit("/", 1)[0] + "/" + name
    r = redis.Redis.from_url(args.redis_url)
    r.flushdb()
    checks = {**GATING_CHECKS, **(EXTRA_CHECKS if args.extra_checks else {})}
    try:
        upgrade(url)
        with tempfile.TemporaryDirectory(prefix="cp-fuzz-") as tmp:
            settings = fuzz_settings(url, args.redis_url, Path(tmp))
            with fuzzer(
                settings,
                examples=args.examples,
                hostile_examples=args.hostile_examples,
                seconds=args.seconds,
                checks=checks,
            ) as f:
                print(f"schemathesis over {len(f.operations(args.only))} operations", flush=True)
                figures = f.run(tuple(args.identities.split(",")), only=args.only)
    finally:
        r.flushdb()
        r.close()
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    print(figures.summary())
    if figures.findings:
        print("\n" + figures.report())
    if args.report:
        args.report.write_text(figures.summary() + "\n\n" + figures.report() + "\n")
    gating = [f for f in figures.findings.values() if f.check not in EXTRA_CHECKS]
    return 1 if gating else 0


if __name__ == "__main__":
    sys.exit(main())
