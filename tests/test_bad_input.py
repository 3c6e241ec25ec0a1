"""Bad input refused, counted and contained: broken and hostile frames, text where binary is
expected, malformed JSON, bad tokens, foreign origins, brute force and cross-teacher access to
every session endpoint (enumerated from the app, so new endpoints are covered automatically).
Nothing crashes (the worker keeps processing good frames) and nothing leaks."""

from __future__ import annotations

import re
import struct
import time
import uuid

import jwt
import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.websockets import WebSocketDisconnect

from app.main import create_app
from classpulse import contracts
from tests import stream_helpers as streams
from tests.access_helpers import all_routes
from tests.gateway_helpers import (
    JPEG,
    PASSWORD,
    PNG,
    _encode,
    bearer,
    client_for,
    joined_session,
    make_user,
    next_json,
    token_protocols,
)
from tests.pipeline_helpers import InferenceWorker
from tests.stream_helpers import jpeg as face_jpeg
from tests.stream_helpers import stats

pipeline = streams.pipeline  # the stream tests' fixture: the models, loaded once per module

LEAK_MARKERS = ("Traceback", 'File "', "sqlalchemy", "psycopg", "redis.exceptions")


def _ack(ws):
    return next_json(ws, lambda m: m["type"] == "ack", limit=200)


def bomb_jpeg(width: int = 60000, height: int = 60000) -> bytes:
    """A JPEG whose frame header claims width×height (a decompression bomb if decoded)."""
    real = bytearray(JPEG)
    for sof in (b"\xff\xc0", b"\xff\xc2"):
        i = real.find(sof)
        if i > 0:
            real[i + 5 : i + 9] = struct.pack(">HH", height, width)
            return bytes(real)
    raise AssertionError("no SOF marker in the test JPEG")


# --- frames -----------------------------------------------------------------------------------
def test_hostile_frames_are_refused_at_the_gateway(joined, settings, clean_redis):
    client, _, session, student = joined
    cases = {
        b"": "not_jpeg",  # zero bytes
        PNG: "not_jpeg",
        JPEG[: len(JPEG) // 2]: "corrupt",  # truncated: no end marker
        b"\xff\xd8\xff" + b"\x00" * (10 * 1024 * 1024) + b"\xff\xd9": "too_large",  # 10 MB
        b"GIF89a" + JPEG: "not_jpeg",
    }
    with client.websocket_connect(
        "/ws/student", subprotocols=token_protocols(student["token"])
    ) as ws:
        ws.receive_json()
        for frame, reason in cases.items():
            ws.send_bytes(frame)
            ack = _ack(ws)
            assert ack == {"type": "ack", "seq": ack["seq"], "ok": False, "reason": reason}
        ws.send_text("x" * 200_000)  # text where binary is expected: an error, not a crash
        assert "binary JPEG" in next_json(ws, lambda m: m["type"] == "error")["message"]
        ws.send_bytes(JPEG)  # the socket still works
        assert _ack(ws)["ok"] is True
    assert clean_redis.xlen(contracts.FRAMES_STREAM) == 1
    text = client.get("/metrics").text
    assert 'classpulse_frames_dropped_total{reason="too_large"} 1.0' in text
    assert 'classpulse_frames_dropped_total{reason="not_jpeg"} 3.0' in text
    assert 'classpulse_frames_dropped_total{reason="corrupt"} 1.0' in text


def test_frames_only_the_worker_can_judge_are_dropped_and_counted(settings, clean_redis, pipeline):
    """The gateway refuses what a JPEG's header gives away (app/ingest.py: size read as the
    decoder reads it); what it lets through, and the same frames written to the stream directly
    (an older gateway, a script), the worker drops by reason, processing the good frames around
    them."""
    settings = settings.model_copy(update={"frame_max_fps": 100.0})  # not testing the rate cap
    with joined_session(settings) as (client, _, _, student):
        _send_then_process(client, student, settings, clean_redis, pipeline)


def _send_then_process(client, student, settings, clean_redis, pipeline):
    good = face_jpeg()
    frames = [
        good,
        bomb_jpeg(),  # claims 60000×60000: refused from its header, never decoded
        bomb_jpeg(8, 8),  # tiny
        bomb_jpeg(5000, 5000),  # huge, but under the gateway's byte cap
        b"\xff\xd8\xff\xe0" + b"\x13" * 2000 + b"\xff\xd9",  # JPEG markers around garbage
        good[:600] + b"\x00" * 3000 + b"\xff\xd9",  # header intact, entropy data destroyed
        good,
    ]
    with client.websocket_connect(
        "/ws/student", subprotocols=token_protocols(student["token"])
    ) as ws:
        ws.receive_json()
        reasons = []
        for frame in frames:
            time.sleep(0.02)  # under the (raised) rate cap
            ws.send_bytes(frame)
            reasons.append(_ack(ws).get("reason"))
    assert reasons == [None, "too_large", "too_small", "too_large", "corrupt", "corrupt", None]
    for seq, (frame, reason) in enumerate(zip(frames, reasons, strict=True), start=1):
        if reason is not None:  # past the gateway: straight into the stream
            clean_redis.xadd(
                contracts.FRAMES_STREAM,
                {
                    contracts.F_VERSION: b"1",
                    contracts.F_SESSION: student["session_id"].encode(),
                    contracts.F_STUDENT: student["student_id"].encode(),
                    contracts.F_SEQ: str(seq).encode(),
                    contracts.F_RECEIVED_MS: str(time.time() * 1000).encode(),
                    contracts.F_EMOTION: b"1",
                    contracts.F_JPEG: frame,
                },
            )
    worker = InferenceWorker(settings, clean_redis, pipeline)
    worker.setup()
    processed = 0
    while batch := worker.read_batch():
        processed += worker.process(batch)
    counts = stats(clean_redis)
    dropped = {k.removeprefix("worker.dropped."): v for k, v in counts.items() if "dropped" in k}
    assert counts["worker.processed"] == processed
    assert dropped["too_large"] == 2 and dropped["too_small"] == 1
    assert dropped.get("corrupt", 0) + processed == 4  # garbage: corrupt, or decoded as noise
    results = [
        contracts.result_decoder.decode(f[contracts.R_DATA])
        for _, f in clean_redis.xrange(contracts.RESULTS_STREAM)
    ]
    assert [r.seq for r in results if r.faces] == [1, 7]  # good frames before and after
    assert clean_redis.xpending(contracts.FRAMES_STREAM, contracts.WORKER_GROUP)["pending"] == 0


# --- JSON bodies ----------------------------------------------------------------------------
BAD_BODIES = [
    b"{not json",
    b"[1, 2]",
    b'"a string"',
    b"null",
    b'{"title": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b"\xff\xfe\x00garbage",
]


def test_malformed_json_bodies_get_a_clear_error_everywhere(joined, settings):
    client, headers, session, student = joined
    admin = bearer(settings, make_user(settings, "admin@school.example", "admin"), "admin")
    app = create_app(settings)
    posted = 0
    for route in all_routes(app):
        if not isinstance(route, APIRoute) or not route.methods & {"POST", "PUT", "PATCH"}:
            continue
        if route.body_field is None:
            continue  # no body to break
        path = route.path.replace("{session_id}", session["id"]).replace(
            "{code}", session["join_code"]
        )
        auth = admin if route.path.startswith("/api/admin") else headers
        for body in BAD_BODIES:
            for method in route.methods & {"POST", "PUT", "PATCH"}:
                r = client.request(
                    method, path, content=body, headers={**auth, "Content-Type": "application/json"}
                )
                assert r.status_code in (400, 422), (path, body[:20], r.status_code, r.text)
                detail = r.json()["detail"]
                assert isinstance(detail, str) and detail, (path, detail)
                assert not any(m in r.text for m in LEAK_MARKERS), r.text
                posted += 1
    assert posted >= len(BAD_BODIES) * 3  # login, sessions, join at least


# --- tokens, origins, brute force -------------------------------------------------------------
def test_expired_forged_and_foreign_access_tokens_are_refused(joined, settings):
    client, headers, session, _ = joined
    user_id = int(
        jwt.decode(headers["Authorization"].split()[1], options={"verify_signature": False})["sub"]
    )
    now = int(time.time())
    base = {"sub": str(user_id), "role": "teacher", "typ": "access"}
    tokens = {
        "expired": jwt.encode(
            {**base, "iat": now - 100, "exp": now - 10}, settings.secret_key, "HS256"
        ),
        "forged": jwt.encode(
            {**base, "iat": now, "exp": now + 60}, "not-the-server-secret-at-all-1234567", "HS256"
        ),
        "alg none": jwt.encode({**base, "iat": now, "exp": now + 60}, None, "none"),
        "tampered": headers["Authorization"].split()[1][:-4] + "AAAA",
        "garbage": "a.b.c",
    }
    for name, token in tokens.items():
        for path in ("/api/auth/me", "/api/sessions", f"/api/sessions/{session['id']}"):
            r = client.get(path, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401, (name, path, r.status_code)
            assert not any(m in r.text for m in LEAK_MARKERS) and session["title"] not in r.text
        with (
            pytest.raises(WebSocketDisconnect) as closed,
            client.websocket_connect(
                f"/ws/sessions/{session['id']}/live", subprotocols=token_protocols(token)
            ) as ws,
        ):
            ws.receive_json()
        assert closed.value.code == 4401, name


def test_foreign_origin_is_refused_on_both_sockets(joined):
    client, headers, session, student = joined
    token = headers["Authorization"].split()[1]
    for url, tok in (
        ("/ws/student", student["token"]),
        (f"/ws/sessions/{session['id']}/live", token),
    ):
        with (
            pytest.raises(WebSocketDisconnect) as closed,
            client.websocket_connect(
                url, subprotocols=token_protocols(tok), headers={"origin": "https://evil.example"}
            ) as ws,
        ):
            ws.receive_json()
        assert (closed.value.code, closed.value.reason) == (4403, "origin not allowed")


def test_login_brute_force_is_rate_limited_even_for_the_right_password(settings):
    settings = settings.model_copy(update={"login_attempts_per_minute": 5})
    make_user(settings, "t@school.example")
    with client_for(settings) as client:
        codes = [
            client.post(
                "/api/auth/login", json={"email": "t@school.example", "password": f"guess{i}"}
            ).status_code
            for i in range(8)
        ]
        assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}
        r = client.post("/api/auth/login", json={"email": "t@school.example", "password": PASSWORD})
        assert r.status_code == 429 and "access_token" not in r.text


# --- cross-teacher access to every session endpoint -------------------------------------------
def test_another_teacher_gets_nothing_from_any_session_endpoint(joined, settings):
    client, headers, session, student = joined
    other = bearer(settings, make_user(settings, "other@school.example"))
    other_token = other["Authorization"].split()[1]
    secret = (session["title"], session["join_code"], student["student_id"])
    checked = []
    for route in all_routes(create_app(settings)):
        if "{session_id}" not in route.path:
            continue
        # Other parameters get this session's own values (a student of it, its join code).
        path = re.sub(
            r"\{(\w+)\}",
            lambda m: {
                "session_id": session["id"],
                "student_id": student["student_id"],
                "code": session["join_code"],
            }.get(m.group(1), "x"),
            route.path,
        )
        if isinstance(route, APIWebSocketRoute):
            with (
                pytest.raises(WebSocketDisconnect) as closed,
                client.websocket_connect(path, subprotocols=token_protocols(other_token)) as ws,
            ):
                ws.receive_json()
            assert closed.value.code == 4404, path  # same as a missing session
            checked.append(path)
            continue
        for method in sorted(route.methods - {"HEAD"}):
            r = client.request(method, path, headers=other, json={})
            body = r.text
            if path.startswith("/api/"):
                # Refused (404 for a session that isn't yours, 403 for an admin-only endpoint),
                # and the same answer as for a session that doesn't exist: no existence oracle.
                assert r.status_code in (403, 404), (method, path, r.status_code)
                ghost = client.request(
                    method, path.replace(session["id"], str(uuid.uuid4())), headers=other, json={}
                )
                assert (ghost.status_code, ghost.json()) == (r.status_code, r.json()), (
                    method,
                    path,
                )
            else:  # a page shell: it may render, but carries none of the session's data
                assert r.status_code in (200, 401, 403, 404), (method, path)
            assert not any(s in body for s in secret), (method, path)
            checked.append(f"{method} {path}")
    # Not vacuous: the endpoints known today are among those checked (new ones are added).
    sid = session["id"]
    for known in (
        f"GET /api/sessions/{sid}",
        f"POST /api/sessions/{sid}/end",
        f"GET /api/sessions/{sid}/students",
        f"GET /api/sessions/{sid}/history",
        f"GET /api/sessions/{sid}/stream-stats",
        f"/ws/sessions/{sid}/live",
    ):
        assert known in checked, known
    # The session is untouched (B's POST /end did nothing).
    assert client.get(f"/api/sessions/{sid}", headers=headers).json()["ended_at"] is None
    # Unknown and malformed ids look the same as someone else's: no existence oracle.
    for sid in (str(uuid.uuid4()), "not-a-uuid"):
        r = client.get(f"/api/sessions/{sid}/history", headers=other)
        assert r.status_code == 404 and r.json() == {"detail": "session not found"}
    assert client.get("/api/sessions/../../etc/passwd", headers=other).status_code == 404


def test_image_helpers_are_what_they_claim():
    assert bomb_jpeg().startswith(b"\xff\xd8\xff") and _encode("PNG").startswith(b"\x89PNG")
