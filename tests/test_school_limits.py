"""Limits that fit a school (issue 18): a whole school arrives from one NAT address, so what is
counted per address is failures (wrong or ended join codes, wrong passwords), never correct
logins or valid joins; sessions are bounded by their own student cap; reconnects and reloads
never count. Against the running app (in-process, the real PostgreSQL and Redis, where the
counts live so they hold across gateways), with the shipped default limits.

Accounts get a cheap argon2id hash (same algorithm, low cost: a hash carries its parameters and
verification reads them) so 50 logins take milliseconds each instead of a fifth of a second.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import psycopg
import pytest
from argon2 import PasswordHasher
from redis import asyncio as aioredis
from sqlalchemy.orm import Session
from starlette.websockets import WebSocketDisconnect

from app.ratelimit import Limit, Refused, address_key, refund, reserve
from app.students import REPLACED, REPLACED_REASON
from classpulse import contracts
from classpulse.db import User, make_engine
from classpulse.settings import Settings
from tests.gateway_helpers import (
    PASSWORD,
    bearer,
    client_for,
    from_address,
    join,
    new_session,
    next_json,
    token_protocols,
)

SCHOOL = "203.0.113.7"  # the school's NAT address: every request below comes from it
DEFAULTS = Settings()  # the shipped limits, the numbers the README states


@cache
def _cheap_hash() -> str:
    return PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)


def _teachers(settings: Settings, n: int) -> list[tuple[int, str]]:
    """``n`` teacher accounts with PASSWORD: (id, email)."""
    engine = make_engine(settings.database_url or "")
    try:
        with Session(engine) as db:
            users = [
                User(
                    email=f"teacher{i}@school.example",
                    password_hash=_cheap_hash(),
                    role="teacher",
                    display_name=f"Teacher {i}",
                )
                for i in range(n)
            ]
            db.add_all(users)
            db.commit()
            return [(u.id, u.email) for u in users]
    finally:
        engine.dispose()


def _students(settings: Settings) -> int:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute("SELECT count(*) FROM students").fetchone()[0]


def test_the_shipped_numbers():
    """What the README states."""
    assert DEFAULTS.join_failures_per_minute_per_address == 120
    assert DEFAULTS.joins_per_minute_per_address == 3000
    assert DEFAULTS.joins_per_minute_per_session is None  # the session's cap
    assert DEFAULTS.max_students_per_session == 250
    assert DEFAULTS.login_failures_per_minute_per_address == 30
    assert DEFAULTS.login_attempts_per_minute == 10


def test_counting_by_address_and_taking_back(redis_url, clean_redis):
    """IPv6 clients count by their /64 (one host gets a whole one); a count taken back after its
    window ended leaves nothing behind (a bare DECR would leave -1 without a TTL, for ever)."""
    assert address_key("2001:db8:1:2:3:4:5:6") == address_key("2001:db8:1:2:ffff::1")
    assert address_key("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1" == address_key("192.0.2.1")
    assert address_key(None) == "unknown"

    async def run() -> None:
        client = aioredis.Redis.from_url(redis_url)
        limit = Limit("cp:test:limit", 2, "join_address", "too many")
        try:
            await reserve(client, limit)
            await reserve(client, limit)
            with pytest.raises(Refused) as refused:
                await reserve(client, limit)
            assert refused.value.limit is limit and 1 <= refused.value.retry_after <= 60
            await refund(client, limit.key)
            assert int(await client.get(limit.key)) == 2
            await client.delete(limit.key)  # the window ended while the attempt was checked
            await refund(client, limit.key)
            assert await client.exists(limit.key) == 0
        finally:
            await client.aclose()

    asyncio.run(run())


def test_600_students_join_20_sessions_from_one_address_within_a_minute(settings, clean_redis):
    teachers = _teachers(settings, 20)
    with client_for(settings) as client, from_address(client, SCHOOL):
        codes = [
            new_session(client, bearer(settings, tid), f"Class {i}")["join_code"]
            for i, (tid, _) in enumerate(teachers)
        ]

        def student(i: int) -> int:
            """What a student's page does with the server: the class and notice, the join (the
            page itself counts nothing: the teacher's reloads below show it)."""
            code = codes[i % len(codes)]
            assert client.get(f"/api/join/{code}").status_code == 200
            body = {"display_name": f"Student {i}", "consent": True}
            return client.post(f"/api/join/{code}", json=body).status_code

        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:  # arriving together, not one after another
            statuses = list(pool.map(student, range(600)))
        elapsed = time.monotonic() - started
        assert statuses == [201] * 600
        assert elapsed < 60, f"600 joins took {elapsed:.1f} s: not within one minute"
        assert _students(settings) == 600
        # Nothing of it counted as a failure; every join counted once against the address's
        # flood ceiling (3,000) and its session (30 each, against the cap of 250).
        address = int(clean_redis.get(f"cp:join:address:{SCHOOL}") or 0)
        assert int(clean_redis.get(f"cp:join:fail:{SCHOOL}") or 0) == 0 and address == 600
        # A teacher reloading the join page (page and lookup) 200 times counts nothing.
        for _ in range(200):
            assert client.get(f"/join/{codes[0]}").status_code == 200
            assert client.get(f"/api/join/{codes[0]}").status_code == 200
        assert int(clean_redis.get(f"cp:join:fail:{SCHOOL}") or 0) == 0
        print(f"\n600 joins (lookup, join) from one address in {elapsed:.1f} s")


def test_50_teachers_log_in_from_one_address(settings, clean_redis):
    teachers = _teachers(settings, 50)
    with client_for(settings) as client, from_address(client, SCHOOL):

        def login(email: str) -> int:
            body = {"email": email, "password": PASSWORD}
            return client.post("/api/auth/login", json=body).status_code

        with ThreadPoolExecutor(10) as pool:
            statuses = list(pool.map(login, [email for _, email in teachers]))
        assert statuses == [200] * 50
        # A few typos on the way (each a failure), and everyone still gets in.
        typos = [
            client.post("/api/auth/login", json={"email": e, "password": "typo"}).status_code
            for _, e in teachers[:10]
        ]
        assert typos == [401] * 10
        assert all(login(email) == 200 for _, email in teachers)
        assert int(clean_redis.get(f"cp:login:fail:ip:{SCHOOL}") or 0) == 10


def test_1000_wrong_join_codes_are_refused_after_120(settings, clean_redis):
    limit = DEFAULTS.join_failures_per_minute_per_address
    with client_for(settings) as client:
        code = new_session(client, bearer(settings, _teachers(settings, 1)[0][0]))["join_code"]
        with from_address(client, SCHOOL):
            statuses = []
            for i in range(1000):  # lookups and joins alike
                wrong = f"WR{i:06d}"
                if i % 2:
                    r = client.get(f"/api/join/{wrong}")
                else:
                    r = client.post(
                        f"/api/join/{wrong}", json={"display_name": "x", "consent": True}
                    )
                statuses.append(r.status_code)
            assert statuses[:limit] == [404] * limit
            assert set(statuses[limit:]) == {429}
            assert 1 <= int(r.headers["retry-after"]) <= 60
            assert "wrong or ended join codes" in r.json()["detail"]
            # Past the limit a right code is refused from this address too (or the limit would
            # tell right from wrong): until the minute is over.
            assert client.get(f"/api/join/{code}").status_code == 429
        with from_address(client, "198.51.100.9"):  # another school is not affected
            assert client.get(f"/api/join/{code}").status_code == 200
            join(client, code, "Ada")
        metrics = client.get("/metrics").text
        assert 'classpulse_rate_limited_total{limit="join_address"} 881.0' in metrics
    assert _students(settings) == 1


def test_100_wrong_passwords_are_refused_after_30_per_address_and_10_per_account(
    settings, clean_redis
):
    per_address = DEFAULTS.login_failures_per_minute_per_address
    per_account = DEFAULTS.login_attempts_per_minute
    teachers = _teachers(settings, 51)
    with client_for(settings) as client:
        with from_address(client, SCHOOL):
            statuses = []
            for i in range(100):  # two guesses per account: the address's limit is what stops
                email = teachers[i % 50][1]
                r = client.post("/api/auth/login", json={"email": email, "password": f"g{i}"})
                statuses.append(r.status_code)
            assert statuses[:per_address] == [401] * per_address
            assert set(statuses[per_address:]) == {429}
            assert "this address" in r.json()["detail"]
        # One account (not guessed above) guessed from many addresses: stopped per account.
        victim = teachers[50][1]
        statuses = []
        for i in range(100):
            with from_address(client, f"192.0.2.{i + 1}"):
                r = client.post("/api/auth/login", json={"email": victim, "password": f"h{i}"})
                statuses.append(r.status_code)
        assert statuses[:per_account] == [401] * per_account
        assert set(statuses[per_account:]) == {429}
        assert "this account" in r.json()["detail"]


def test_a_sessions_cap_holds_against_a_flood_of_fake_names(settings, clean_redis):
    """A classroom-sized cap (40): the class joins, the next are told it is full, and past twice
    the cap in a minute the flood is refused before it reaches the database."""
    cap = 40
    settings = settings.model_copy(update={"max_students_per_session": cap})
    with client_for(settings) as client, from_address(client, SCHOOL):
        code = new_session(client, bearer(settings, _teachers(settings, 1)[0][0]))["join_code"]
        statuses = [
            client.post(
                f"/api/join/{code}", json={"display_name": f"Fake {i}", "consent": True}
            ).status_code
            for i in range(4 * cap)
        ]
        assert statuses[:cap] == [201] * cap
        assert statuses[cap : 2 * cap] == [409] * cap  # "this class session is full"
        assert set(statuses[2 * cap :]) == {429}
    assert _students(settings) == cap


def _closed(ws) -> tuple[int, str]:
    with pytest.raises(WebSocketDisconnect) as closed:
        while True:
            ws.receive_json()
    return closed.value.code, closed.value.reason


def test_reconnects_never_count_and_a_newer_socket_replaces_the_older(settings, clean_redis):
    """A student's page that reconnects (or reloads) reuses its token: no second join, nothing
    counted. Sockets per student: one; a newer one replaces the older (closed with 4409), which
    leaves no "disconnected" behind."""
    tight = settings.model_copy(update={"joins_per_minute_per_session": 2})
    with client_for(tight) as client, from_address(client, SCHOOL):
        session = new_session(client, bearer(tight, _teachers(tight, 1)[0][0]))
        ada = join(client, session["join_code"], "Ada")
        bo = join(client, session["join_code"], "Bo")
        protocols = token_protocols(ada["token"])
        for _ in range(10):  # reconnects after dropped sockets
            with client.websocket_connect("/ws/student", subprotocols=protocols) as ws:
                assert ws.receive_json()["type"] == "config"
        assert int(clean_redis.get(f"cp:join:session:{session['id']}")) == 2
        assert int(clean_redis.get(f"cp:join:address:{SCHOOL}")) == 2
        assert _students(tight) == 2

        bo_ws = client.websocket_connect("/ws/student", subprotocols=token_protocols(bo["token"]))
        with bo_ws as other:
            assert other.receive_json()["type"] == "config"
            with client.websocket_connect("/ws/student", subprotocols=protocols) as first:
                assert first.receive_json()["type"] == "config"
                with client.websocket_connect("/ws/student", subprotocols=protocols) as second:
                    assert second.receive_json()["type"] == "config"
                    assert _closed(first) == (REPLACED, REPLACED_REASON)
                    second.send_text('{"type": "ping"}')
                    assert next_json(second, lambda m: m["type"] == "pong")
                    # Another student's socket is untouched.
                    other.send_text('{"type": "ping"}')
                    assert next_json(other, lambda m: m["type"] == "pong")
                    presence = clean_redis.hget(
                        contracts.presence_key(session["id"]), ada["student_id"]
                    )
                    assert b'"present"' in presence  # the replaced socket said nothing


@pytest.mark.slow
def test_fuzzing_the_limited_operations_with_the_shipped_limits(settings):
    """Schemathesis (tests/fuzz_harness.py) over the operations these limits guard, with the
    shipped limits rather than the harness's generous ones: the fuzzer's random codes and
    passwords run into the failure limits, and every answer, 429s included, is a 4xx that
    matches its schema."""
    from tests.fuzz_harness import Fuzzer, serve

    operations = ("/api/join/", "/api/auth/login", "/api/auth/password", "password-link")
    with serve(settings) as (base_url, errors):
        fuzz = Fuzzer(settings, base_url, errors, examples=8, hostile_examples=1, seconds=150)
        try:
            for only in operations:
                fuzz.run(only=only)
            figures = fuzz.figures
            print(figures.summary())
            assert not figures.findings, figures.summary() + "\n\n" + figures.report()
            assert figures.statuses[429] > 0, "no limit was reached"
            assert all(status < 500 for status in figures.statuses)
        finally:
            fuzz.close()
