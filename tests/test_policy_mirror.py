"""The policy mirror in Redis is stamped by a version, not a clock: the later save wins."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

import classpulse.db as cpdb
from classpulse import contracts as c
from classpulse.policy import Policy, load_stamped, read_mirror, save, write_mirror


# --- 2. the policy mirror: the later save wins whatever the clocks ------------------------------
def _save(engine, policy: Policy) -> int:
    with Session(engine) as db:
        version = save(db, policy, None)
        db.commit()
    with Session(engine) as db:
        assert load_stamped(db) == (policy, version)
    return version


def test_a_later_save_wins_the_mirror_whatever_the_gateways_clocks(
    engine, clean_redis, monkeypatch
):
    # A gateway whose clock runs a day fast relaxes the policy and mirrors it...
    fast = datetime.now(UTC) + timedelta(days=1)
    monkeypatch.setattr(cpdb, "utcnow", lambda: fast)
    v1 = _save(engine, Policy("per_student"))
    assert write_mirror(clean_redis, Policy("per_student"), v1)
    # ... then one with a correct clock (or the same after a step back) turns emotions off.
    monkeypatch.setattr(cpdb, "utcnow", lambda: datetime.now(UTC) - timedelta(hours=1))
    v2 = _save(engine, Policy("off"))
    assert v2 == v1 + 1
    assert write_mirror(clean_redis, Policy("off"), v2)
    assert read_mirror(clean_redis) == Policy("off")
    # A process that read PostgreSQL before the second save cannot put the first one back.
    assert not write_mirror(clean_redis, Policy("per_student"), v1)
    assert read_mirror(clean_redis) == Policy("off")


def test_a_mirror_stamped_by_the_old_clock_scheme_does_not_block_saves(engine, clean_redis):
    """Before the version column the mirror's ``stamp`` was a wall clock in microseconds."""
    far_future_us = int((time.time() + 10 * 365 * 86400) * 1_000_000)
    clean_redis.hset(
        c.POLICY_KEY,
        mapping={
            "stamp": far_future_us,
            "emotion_mode": "per_student",
            "min_group_size": 5,
            "retention_days": 30,
        },
    )
    version = _save(engine, Policy("off"))
    assert write_mirror(clean_redis, Policy("off"), version)
    assert read_mirror(clean_redis) == Policy("off")
    # and gateways still running the old script (compare `stamp`) no longer write over it
    assert int(clean_redis.hget(c.POLICY_KEY, "stamp")) > far_future_us


def test_concurrent_saves_get_distinct_increasing_versions(engine):
    versions: list[int] = []
    lock = threading.Lock()

    def one(mode: str) -> None:
        v = _save_quiet(engine, Policy(mode))  # type: ignore[arg-type]
        with lock:
            versions.append(v)

    threads = [threading.Thread(target=one, args=(m,)) for m in ("off", "aggregate_only") * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(versions) == list(range(min(versions), min(versions) + 8))


def _save_quiet(engine, policy: Policy) -> int:
    with Session(engine) as db:
        version = save(db, policy, None)
        db.commit()
    return version


def test_the_attention_switch_travels_through_the_mirror(clean_redis):
    """Field ``attention`` "1"/"0"; a mirror an older release wrote without it reads as off."""
    assert write_mirror(clean_redis, Policy("off", attention=True), 1)
    assert clean_redis.hget(c.POLICY_KEY, "attention") == b"1"
    assert read_mirror(clean_redis) == Policy("off", attention=True)
    assert write_mirror(clean_redis, Policy("off"), 2)
    assert read_mirror(clean_redis) == Policy("off")
    clean_redis.hdel(c.POLICY_KEY, "attention")
    assert read_mirror(clean_redis) == Policy("off")
