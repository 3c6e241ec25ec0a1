"""Exec probe for the worker and the aggregator, which serve no HTTP and have no metrics port.

Their loops refresh a heartbeat key in Redis every 2 s with a 15 s TTL (classpulse.streams.
Heartbeat), named ``<prefix><role>-<hostname>-<pid>`` (classpulse.streams.consumer_name), the
key the gateway's /readyz counts workers by. This probe finds the pids of this container's
``classpulse <role>`` processes in /proc and asks Redis whether one of their keys exists (EXISTS:
no scan of the keyspace).

    python heartbeat_probe.py worker|aggregator [--strict]

Exit 0 when a key exists. Without --strict (liveness, startup) also 0 when Redis cannot be
reached: the process is then waiting for Redis with backoff, and a restart would not help.
With --strict (readiness) an unreachable Redis is a failure.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import redis

from classpulse import contracts

PREFIXES = {
    "worker": contracts.WORKER_HEARTBEAT_PREFIX,
    "aggregator": contracts.AGGREGATOR_HEARTBEAT_PREFIX,
}


def service_pids(role: str, proc: Path = Path("/proc")) -> list[int]:
    """Pids of processes whose command line is ``... classpulse ... <role> ...``."""
    pids = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # gone meanwhile, or not ours
            continue
        if role in argv and any(a == "classpulse" or a.endswith("/classpulse") for a in argv):
            pids.append(int(entry.name))
    return pids


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in PREFIXES:
        sys.stderr.write(f"usage: heartbeat_probe.py {'|'.join(PREFIXES)} [--strict]\n")
        return 2
    role, strict = argv[0], "--strict" in argv[1:]
    pids = service_pids(role)
    if not pids:
        sys.stderr.write(f"no classpulse {role} process\n")
        return 1
    host = socket.gethostname()
    keys = [f"{PREFIXES[role]}{role}-{host}-{pid}" for pid in pids]
    url = os.environ.get("CLASSPULSE_REDIS_URL", "")
    try:
        r = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
        alive = r.exists(*keys)
    except (redis.RedisError, OSError, ValueError) as exc:
        sys.stderr.write(f"redis unavailable: {exc}\n")
        return 1 if strict else 0
    if not alive:
        sys.stderr.write(f"no heartbeat: {', '.join(keys)}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
