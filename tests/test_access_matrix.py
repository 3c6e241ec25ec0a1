"""Access matrix: every HTTP route and WebSocket of the app, called as each kind of caller.

``ACCESS`` has one row per (method, path template) the app serves, naming a rule from ``RULES``
(who gets in, and what everyone else gets: the exact status or close code). The app's routes
are enumerated, so a new route without a row fails ``test_every_route_has_an_access_rule``,
and so does a row for a route that is gone.

The callers: nobody, a student of session A, a student of session B, the teacher who owns A,
the teacher who owns B (the "other teacher", who must get nothing of A: 404, the same as for a
session that doesn't exist) and an admin. Path parameters are filled with A's values: its id,
its student, its join code, its teacher's account. Calls that change what the others would see
(ending A, deleting its data, logging out...) run in a world of their own, and afterwards A is
checked to be intact wherever the caller had no right to change it. Every answer is searched
for the other session's secrets (id, title, join code, student id and name).
"""

from __future__ import annotations

from typing import Any

from starlette.websockets import WebSocketDisconnect

from app.main import create_app
from classpulse import contracts
from classpulse.settings import Settings
from tests.access_helpers import (
    ACCESS,
    ADMIN,
    ANON,
    STUDENT_A,
    STUDENT_B,
    TEACHER_A,
    TEACHER_B,
    VISIBLE,
    Call,
    Outcome,
    World,
    _value,
    build_world,
    call_route,
    concrete_path,
    route_keys,
)
from tests.gateway_helpers import (
    client_for,
    new_session,
    token_protocols,
)

IDENTITIES = (ANON, STUDENT_A, STUDENT_B, TEACHER_A, TEACHER_B, ADMIN)

# Callers who have no right to change anything of A: after their calls A must be as it was.
NO_RIGHTS_ON_A = (ANON, STUDENT_B, TEACHER_B)

# --- the rules ----------------------------------------------------------------------------------
OK = "ok"  # allowed: the row's own success status (HTTP) or first message (WebSocket)
RULES: dict[str, dict[str, str | int]] = {
    # Anyone, with or without a token, gets the same answer (pages are shells with no data).
    "public": dict.fromkeys(IDENTITIES, OK),
    # Any teacher or admin account; student tokens are not accounts.
    "any_user": {
        ANON: 401,
        STUDENT_A: 401,
        STUDENT_B: 401,
        TEACHER_A: OK,
        TEACHER_B: OK,
        ADMIN: OK,
    },
    # One session's data: its owner and admins; another teacher gets 404 (no existence oracle).
    "teacher_session": {
        ANON: 401,
        STUDENT_A: 401,
        STUDENT_B: 401,
        TEACHER_A: OK,
        TEACHER_B: 404,
        ADMIN: OK,
    },
    # Administration: "administrators only" for teachers, whoever owns the session.
    "admin_only": {
        ANON: 401,
        STUDENT_A: 401,
        STUDENT_B: 401,
        TEACHER_A: 403,
        TEACHER_B: 403,
        ADMIN: OK,
    },
    # The calling student's own data (the token says whose): account tokens are not read.
    "student_only": {
        ANON: 401,
        STUDENT_A: OK,
        STUDENT_B: OK,
        TEACHER_A: 401,
        TEACHER_B: 401,
        ADMIN: 401,
    },
    # The dashboard feed of session A: accepted (snapshot first) or closed with a code.
    "ws_teacher_session": {
        ANON: 4401,
        STUDENT_A: 4401,
        STUDENT_B: 4401,
        TEACHER_A: OK,
        TEACHER_B: 4404,
        ADMIN: OK,
    },
    # The student's frame socket (its own session, from the token): config first.
    "ws_student": {
        ANON: 4401,
        STUDENT_A: OK,
        STUDENT_B: OK,
        TEACHER_A: 4401,
        TEACHER_B: 4401,
        ADMIN: 4401,
    },
}


def table_problems(app: Any) -> list[str]:
    served = route_keys(app)
    problems = [
        f"{m} {p}: served by the app ({type(served[(m, p)]).__name__}) but has no row in"
        " tests/access_helpers.py ACCESS; add one saying who may call it"
        for m, p in sorted(served.keys() - ACCESS.keys())
    ]
    problems += [
        f"{m} {p}: has a row in ACCESS but the app no longer serves it; remove the row"
        for m, p in sorted(ACCESS.keys() - served.keys())
    ]
    problems += [
        f"{m} {p}: rule {call.rule!r} is not one of {sorted(RULES)}"
        for (m, p), call in ACCESS.items()
        if call.rule not in RULES
    ]
    return problems


def test_every_route_has_an_access_rule():
    """Cheap, without a database: the table and the app agree."""
    app = create_app(Settings(env="test", secret_key="matrix-" + "k" * 48))
    problems = table_problems(app)
    assert not problems, "access matrix out of date:\n  " + "\n  ".join(problems)


def a_intact(client: Any, w: World) -> str | None:
    """None if session A, its student and its teacher are as they were, else what changed."""
    client.cookies.clear()
    sid, student = w.a["id"], w.students["A"]["student_id"]
    r = client.get("/api/auth/me", headers=w.headers[TEACHER_A])
    if r.status_code != 200:
        return f"A's teacher's token no longer works ({r.status_code})"
    r = client.get(f"/api/sessions/{sid}", headers=w.headers[TEACHER_A])
    if r.status_code != 200 or r.json()["ended_at"] is not None:
        return f"session A gone or ended ({r.status_code} {r.text[:120]})"
    r = client.get(f"/api/sessions/{sid}/students", headers=w.headers[TEACHER_A])
    roster = {s["id"]: s for s in r.json()}
    if student not in roster or roster[student]["withdrawn_at"] is not None:
        return "A's student deleted or withdrawn"
    r = client.get("/api/student/me", headers=w.headers[STUDENT_A])
    if r.status_code != 200 or r.json()["consent"] != "accepted":
        return f"A's student's own view changed ({r.status_code} {r.text[:120]})"
    return None


def leaks(outcome: Outcome, allowed: bool, url: str, call: Call, who: str, w: World) -> list[str]:
    """Secrets of sessions the caller may not see, found in the answer. A refused answer may
    hold none at all; values the caller put in the URL itself don't count."""
    visible = set(VISIBLE[who]) if allowed else set()
    if allowed and call.grants_a:
        visible.add("A")
    found = []
    for which in ("A", "B"):
        if which in visible:
            continue
        for name, value in w.secrets(which).items():
            if value in outcome.text and value not in url:
                found.append(name)
    return found


def check_one(
    client: Any, key: tuple[str, str], call: Call, who: str, w: World, fresh: bool
) -> list[str]:
    method, template = key
    expected = RULES[call.rule][who]
    path = concrete_path(template, call, w)
    got = call_route(client, method, path, call, who, w)
    where = f"{who:>14} {method:6} {template} [{call.rule}]"
    problems = []
    allowed = expected == OK
    want = call.ok if allowed else expected
    if got.code != want:
        problems.append(f"{where}: expected {want}, got {got.code}: {got.text[:160]}")
        return problems
    if not allowed and method != "WS" and expected in (401, 403, 404) and not got.detail:
        problems.append(f"{where}: refused without a detail: {got.text[:160]}")
    if expected == 404 and got.detail != "session not found":
        problems.append(f"{where}: 404 differs from an unknown session's: {got.detail!r}")
    url = path + "?" + str(_value(call.params, w) or "")
    if found := leaks(got, allowed, url, call, who, w):
        problems.append(f"{where}: answer holds {found}")
    if allowed and call.check is not None:
        body = got.body
        if method != "WS" and body is None:
            problems.append(f"{where}: expected a JSON answer, got {got.text[:120]}")
        elif (wrong := call.check(w, who, body)) is not None:
            problems.append(f"{where}: {wrong}")
    if fresh and (not allowed or who in NO_RIGHTS_ON_A) and (changed := a_intact(client, w)):
        problems.append(f"{where}: changed session A: {changed}")
    return problems


def test_access_matrix(settings, clean_redis):
    """Every route, every caller: the exact status or close code of ``RULES``."""
    # Rate limits are not what this test is about (and it joins and logs in a lot).
    settings = settings.model_copy(
        update={
            "joins_per_minute_per_address": 100_000,
            "joins_per_minute_per_session": 100_000,
            "join_failures_per_minute_per_address": 100_000,
            "login_attempts_per_minute": 100_000,
            "login_failures_per_minute_per_address": 100_000,
        }
    )
    # A live worker, so /readyz answers 200 rather than 503 "no worker".
    clean_redis.set(contracts.WORKER_HEARTBEAT_PREFIX + "access-matrix", "1", ex=600)
    problems: list[str] = []
    calls = 0
    with client_for(settings) as client:
        table = table_problems(client.app)
        assert not table, "access matrix out of date:\n  " + "\n  ".join(table)
        served = route_keys(client.app)
        shared = [(k, c) for k, c in ACCESS.items() if not c.fresh]
        own_world = [(k, c) for k, c in ACCESS.items() if c.fresh]
        for who in IDENTITIES:
            w = build_world(client, settings)
            for key, call in shared:
                problems += check_one(client, key, call, who, w, fresh=False)
                calls += 1
            # Whatever the shared calls did, A and its people are still as they were.
            if changed := a_intact(client, w):
                problems.append(f"{who}: the non-destructive calls changed session A: {changed}")
            for key, call in own_world:
                w = build_world(client, settings)
                problems += check_one(client, key, call, who, w, fresh=True)
                calls += 1
    assert not problems, f"{len(problems)} of {calls} calls wrong:\n  " + "\n  ".join(problems)
    # Not vacuous: every served route was called as every caller.
    assert calls == len(served) * len(IDENTITIES)


def test_refusals_of_the_security_pass(settings, clean_redis):
    """The refusals added by the second security pass, as every caller: a join code that never
    existed and one whose class ended are answered alike (no oracle, whoever asks); a
    set-password link with a wrong password of the acting admin is refused; a second socket of
    a student replaces the first (4409)."""
    problems: list[str] = []
    with client_for(settings) as client:
        w = build_world(client, settings)
        ended = new_session(client, w.headers[TEACHER_A], "Ended class")
        r = client.post(f"/api/sessions/{ended['id']}/end", headers=w.headers[TEACHER_A])
        assert r.status_code == 200
        link = f"/api/admin/users/{w.user_ids[TEACHER_A]}/password-link"
        wrong_password = {
            ANON: 401,
            STUDENT_A: 401,
            STUDENT_B: 401,
            TEACHER_A: 403,
            TEACHER_B: 403,
            ADMIN: 403,
        }
        for who in IDENTITIES:
            headers = w.headers[who]
            answers = []
            for code in ("NEVERUSED", ended["join_code"]):
                for method, body in (
                    ("GET", None),
                    ("POST", {"display_name": "X", "consent": True}),
                ):
                    r = client.request(method, f"/api/join/{code}", headers=headers, json=body)
                    answers.append((r.status_code, r.text))
            if len(set(answers)) != 1 or answers[0][0] != 404:
                problems.append(f"{who}: unknown and ended codes answered {answers}")
            r = client.post(link, headers=headers, json={"current_password": "not it"})
            if r.status_code != wrong_password[who]:
                problems.append(f"{who}: link with a wrong password: {r.status_code} {r.text}")
            elif who == ADMIN and r.json()["detail"] != "the current password is wrong":
                problems.append(f"{who}: link with a wrong password: {r.text}")
            client.cookies.clear()
        protocols = token_protocols(w.students["A"]["token"])
        with client.websocket_connect("/ws/student", subprotocols=protocols) as first:
            assert first.receive_json()["type"] == "config"
            with client.websocket_connect("/ws/student", subprotocols=protocols) as second:
                assert second.receive_json()["type"] == "config"
                try:
                    while True:
                        first.receive_json()
                except WebSocketDisconnect as exc:
                    if exc.code != 4409:
                        problems.append(f"the replaced student socket closed with {exc.code}")
    assert not problems, "\n  ".join(problems)
