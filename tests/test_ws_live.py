"""The teacher's live socket: owner or admin only; a snapshot on connect, then every update."""

from __future__ import annotations

import json
import uuid

import pytest
from starlette.websockets import WebSocketDisconnect

from app.auth import create_access_token
from classpulse import contracts
from tests.gateway_helpers import (
    bearer,
    client_for,
    join,
    make_user,
    new_session,
    student_update,
    token_protocols,
)


def _token(headers):
    return headers["Authorization"].split()[1]


def _close_code(client, url, token=None, **kwargs):
    protocols = token_protocols(token) if token is not None else None
    with (
        client.websocket_connect(url, subprotocols=protocols, **kwargs) as ws,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        ws.receive_json()
    return closed.value.code


def test_snapshot_then_updates(settings, clean_redis):
    teacher = make_user(settings, "t@school.example")
    with client_for(settings) as client:
        headers = bearer(settings, teacher)
        s = new_session(client, headers)
        ada = join(client, s["join_code"], "Ada")
        bob = join(client, s["join_code"], "Bob")
        client.post("/api/student/withdraw", headers={"Authorization": "Bearer " + bob["token"]})
        happy = student_update(
            s,
            ada,
            t=1.0,
            emotion="happy",
            confidence=0.8,
            probs={"happy": 0.8, "sad": 0.2},
            faces=1,
        )
        clean_redis.hset(
            contracts.snapshot_key(s["id"]), ada["student_id"], contracts.encoder.encode(happy)
        )
        clean_redis.hset(contracts.MODEL_INFO_KEY, "labels", json.dumps(["happy", "sad"]))

        with client.websocket_connect(
            f"/ws/sessions/{s['id']}/live", subprotocols=token_protocols(_token(headers))
        ) as ws:
            snap = ws.receive_json()
            assert snap["type"] == "snapshot" and snap["session_id"] == s["id"]
            assert snap["labels"] == ["happy", "sad"]
            a, b = snap["students"]
            assert (a["student_id"], a["display_name"], a["withdrawn"]) == (
                ada["student_id"],
                "Ada",
                False,
            )
            assert a["emotion"]["emotion"] == "happy" and a["presence"] is None
            assert datetime_ok(a["joined_at"])
            assert (b["display_name"], b["withdrawn"], b["presence"]["presence"]) == (
                "Bob",
                True,
                "withdrawn",
            )

            update = student_update(s, ada, emotion="sad", confidence=0.7, presence="no_face")
            clean_redis.publish(contracts.live_channel(s["id"]), contracts.encoder.encode(update))
            clean_redis.publish(
                contracts.live_channel(str(uuid.uuid4())), b'{"not": "this session"}'
            )
            got = ws.receive_json()
            assert (
                got["type"] == "student"
                and got["emotion"] == "sad"
                and got["student_id"] == ada["student_id"]
            )
            ws.send_text("ping")
            assert ws.receive_text() == "pong"

            # A student connecting shows up as presence.
            with client.websocket_connect(
                "/ws/student", subprotocols=token_protocols(ada["token"])
            ) as student_ws:
                student_ws.receive_json()
                presence = ws.receive_json()
                assert presence["type"] == "presence" and presence["presence"] == "present"
                assert presence["display_name"] == "Ada"
            assert ws.receive_json()["presence"] == "disconnected"
        assert 'classpulse_websockets{kind="teacher"} 0.0' in client.get("/metrics").text


def datetime_ok(value: str) -> bool:
    from datetime import datetime

    return datetime.fromisoformat(value).tzinfo is not None


def test_only_owner_or_admin_may_watch(settings):
    a = make_user(settings, "a@school.example")
    b = make_user(settings, "b@school.example")
    admin = make_user(settings, "admin@school.example", "admin")
    with client_for(settings) as client:
        s = new_session(client, bearer(settings, a))
        url = f"/ws/sessions/{s['id']}/live"
        assert (
            _close_code(client, url, _token(bearer(settings, b))) == 4404
        )  # not an existence oracle
        assert (
            _close_code(client, f"/ws/sessions/{uuid.uuid4()}/live", _token(bearer(settings, a)))
            == 4404
        )
        assert _close_code(client, url) == 4401
        assert _close_code(client, url, "garbage") == 4401
        other_secret = settings.model_copy(update={"secret_key": "x" * 40})
        assert _close_code(client, url, create_access_token(other_secret, a, "teacher")) == 4401
        student = join(client, s["join_code"])
        assert _close_code(client, url, student["token"]) == 4401
        evil = {"origin": "https://evil.example"}
        assert _close_code(client, url, _token(bearer(settings, a)), headers=evil) == 4403
        # A token in the URL is not read (it would land in access logs).
        assert _close_code(client, url + "?token=" + _token(bearer(settings, a))) == 4401
        # Scripts may send the bearer header instead of the subprotocol.
        with client.websocket_connect(url, headers=bearer(settings, a)) as ws:
            assert ws.receive_json()["type"] == "snapshot"

        with client.websocket_connect(
            url, subprotocols=token_protocols(_token(bearer(settings, admin, "admin")))
        ) as ws:
            assert ws.accepted_subprotocol == "classpulse"
            assert ws.receive_json()["type"] == "snapshot"
        # The page's HttpOnly cookie also works, from the same origin.
        client.cookies.set("cp_access", _token(bearer(settings, a)))
        with client.websocket_connect(
            f"/ws/sessions/{s['id']}/live", headers={"origin": "http://testserver"}
        ) as ws:
            assert ws.receive_json()["type"] == "snapshot"
