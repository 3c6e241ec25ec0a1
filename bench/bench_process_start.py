"""Each service process as deployed: seconds until ready, memory once ready, and which heavy
libraries it loaded (each process should load only its own floor).

    .venv/bin/python bench/bench_process_start.py [--repeat 3]

Against a fresh database on the local PostgreSQL and Redis database 15 (see tests/process_probe.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.process_probe import WATCH, Started, fresh_database, start  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--commands", default="gateway,worker,aggregator")
    args = parser.parse_args()
    commands = args.commands.split(",")
    runs: dict[str, list[Started]] = {c: [] for c in commands}
    with fresh_database() as url:
        for _ in range(args.repeat):
            for command in commands:
                runs[command].append(start(command, url))
    print(
        f"{'process':<11} {'ready s (median)':>17} {'RSS MB':>7} {'modules':>8}  heavy libraries loaded"
    )
    for command, started in runs.items():
        last = started[-1]
        heavy = [w for w in WATCH if last.loaded(w)]
        print(
            f"{command:<11} {statistics.median(s.ready_s for s in started):>17.2f}"
            f" {statistics.median(s.rss_mb for s in started):>7.0f} {len(last.modules):>8}  "
            + " ".join(heavy)
        )


if __name__ == "__main__":
    main()
