"""The student socket: frames checked, acked and written to the stream; tokens bound to sessions."""

from __future__ import annotations

import json
import time
import uuid

import jwt
import pytest
from starlette.websockets import WebSocketDisconnect

from app.auth import create_student_token
from classpulse import contracts, edge_wire
from tests.gateway_helpers import (
    JPEG,
    PNG,
    join,
    joined_session,
    new_session,
    next_json,
    student_update,
    token_protocols,
)


def _is_ack(msg):
    return msg["type"] == "ack"


def _refused(client, token, headers=None):
    """Connect and return the close code and reason the server answers with."""
    with (
        client.websocket_connect(
            "/ws/student", subprotocols=token_protocols(token), headers=headers or {}
        ) as ws,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        ws.receive_json()
    return closed.value.code, closed.value.reason


def test_frames_are_acked_and_streamed(joined, settings, clean_redis):
    client, _, session, student = joined
    with client.websocket_connect(
        "/ws/student", subprotocols=token_protocols(student["token"])
    ) as ws:
        config = ws.receive_json()
        assert config == {
            "type": "config",
            "fps": 2.0,
            "max_fps": settings.frame_max_fps,
            "max_in_flight": settings.frames_in_flight,
            "width": 320,
            "height": 240,
            "jpeg_quality": 0.7,
            "capture": settings.capture_mode,  # edge by default
            "frames_allowed": True,  # a page that can't run the detector may send frames
            "presence_width": 192,  # ...at most this size under the policy "off"
            "presence_height": 144,
            "detector_url": "/models/face_detection_short_range.onnx",
            "faces_version": edge_wire.VERSION,  # the faces message pages write
            "max_faces": settings.max_faces,
            "detector_score_threshold": settings.detector_score_threshold,
            "detector_iou_threshold": settings.detector_iou_threshold,
            "min_face_size": settings.min_face_size,
            "crop_size": 64,
            "crop_scale": settings.crop_scale,
            "emotion_mode": "per_student",
        }
        ws.send_bytes(JPEG)
        assert next_json(ws, _is_ack) == {"type": "ack", "seq": 1, "ok": True}
        presence = json.loads(
            clean_redis.hget(contracts.presence_key(session["id"]), student["student_id"])
        )
        assert presence["presence"] == "present" and presence["display_name"] == "Ada"

    ((entry_id, fields),) = clean_redis.xrange(contracts.FRAMES_STREAM)
    assert fields[contracts.F_JPEG] == JPEG
    assert fields[contracts.F_SESSION].decode() == session["id"]
    assert fields[contracts.F_STUDENT].decode() == student["student_id"]
    assert fields[contracts.F_SEQ] == b"1" and fields[contracts.F_VERSION] == b"1"
    assert fields[contracts.F_EMOTION] == b"1" and fields[contracts.F_KIND] == b"frame"
    assert abs(float(fields[contracts.F_RECEIVED_MS]) / 1000 - time.time()) < 30
    # On disconnect the dashboard is told.
    deadline = time.time() + 5
    while time.time() < deadline:
        presence = json.loads(
            clean_redis.hget(contracts.presence_key(session["id"]), student["student_id"])
        )
        if presence["presence"] == "disconnected":
            break
        time.sleep(0.02)
    assert presence["presence"] == "disconnected"


def test_bad_frames_and_messages(joined, settings, clean_redis):
    client, _, session, student = joined
    with client.websocket_connect(
        "/ws/student", subprotocols=token_protocols(student["token"])
    ) as ws:
        ws.receive_json()
        ws.send_bytes(b"\xff\xd8\xff" + b"\0" * settings.frame_max_bytes + b"\xff\xd9")
        assert next_json(ws, _is_ack) == {
            "type": "ack",
            "seq": 1,
            "ok": False,
            "reason": "too_large",
        }
        ws.send_bytes(PNG)
        assert next_json(ws, _is_ack)["reason"] == "not_jpeg"
        ws.send_bytes(JPEG[:-50])  # truncated: no end marker
        assert next_json(ws, _is_ack)["reason"] == "corrupt"
        for garbage in ("hello", "[1, 2]", '{"type": "dance"}', '{"type": "camera"}'):
            ws.send_text(garbage)
            error = next_json(ws, lambda m: m["type"] == "error")
            assert error["message"]
        ws.send_text('{"type": "camera", "state": "off"}')
        update = next_json(ws, lambda m: m["type"] == "self" and m["presence"] == "camera_off")
        assert update["kind"] == "presence" and update["student_id"] == student["student_id"]
        ws.send_bytes(JPEG)  # still usable after all that
        assert next_json(ws, _is_ack) == {"type": "ack", "seq": 4, "ok": True}
    assert clean_redis.xlen(contracts.FRAMES_STREAM) == 1


def test_rate_limit_is_counted(settings, clean_redis):
    settings = settings.model_copy(update={"frame_max_fps": 1.0, "frames_in_flight": 1})
    with joined_session(settings) as (client, _, session, student):
        with client.websocket_connect(
            "/ws/student", subprotocols=token_protocols(student["token"])
        ) as ws:
            assert ws.receive_json()["fps"] == 1.0
            for _ in range(6):  # burst 2 at 1 frame/s: most of these are over
                ws.send_bytes(JPEG)
            acks = [next_json(ws, _is_ack) for _ in range(6)]
        reasons = [a.get("reason") for a in acks]
        assert reasons.count("rate_limited") >= 3 and reasons.count(None) >= 2
        text = client.get("/metrics").text
        assert (
            'classpulse_frames_dropped_total{{reason="rate_limited"}} {:.1f}'.format(
                reasons.count("rate_limited")
            )
            in text
        )
        assert "classpulse_frames_received_total 6.0" in text
        assert f"classpulse_frames_accepted_total {reasons.count(None):.1f}" in text


def test_forged_expired_and_foreign_tokens(joined, settings):
    client, headers, session, student = joined
    sid, stid = uuid.UUID(session["id"]), uuid.UUID(student["student_id"])
    other = settings.model_copy(update={"secret_key": "some-other-secret-of-sufficient-length-123"})
    expired = jwt.encode(
        {"sub": str(stid), "sid": str(sid), "typ": "student", "exp": int(time.time()) - 5},
        settings.secret_key,
        "HS256",
    )
    none_alg = jwt.encode(
        {"sub": str(stid), "sid": str(sid), "typ": "student", "exp": int(time.time()) + 60},
        None,
        "none",
    )
    teacher_token = headers["Authorization"].split()[1]
    for token in (
        "",
        "garbage",
        create_student_token(other, stid, sid),
        expired,
        none_alg,
        teacher_token,
    ):
        code, _ = _refused(client, token)
        assert code == 4401, token
    assert _refused(client, expired)[1] == "token expired"

    # A student of session A cannot stream into session B, even with a validly signed token.
    b = new_session(client, headers, "Other class")
    code, reason = _refused(client, create_student_token(settings, stid, uuid.UUID(b["id"])))
    assert (code, reason) == (4403, "token not valid for this session")
    assert _refused(client, create_student_token(settings, uuid.uuid4(), sid))[0] == 4401


def test_origin_withdrawn_and_ended(joined, settings):
    client, headers, session, student = joined
    token = student["token"]
    assert _refused(client, token, {"origin": "https://evil.example"}) == (
        4403,
        "origin not allowed",
    )
    with client.websocket_connect(
        "/ws/student", subprotocols=token_protocols(token), headers={"origin": "http://testserver"}
    ) as ws:
        assert ws.receive_json()["type"] == "config"
        ws.send_text('{"type": "withdraw"}')
        with pytest.raises(WebSocketDisconnect) as closed:
            next_json(ws, lambda m: False)
        assert (closed.value.code, closed.value.reason) == (1000, "withdrawn")
    assert _refused(client, token) == (4403, "withdrawn")

    other = join(client, session["join_code"], "Bob")
    with client.websocket_connect(
        "/ws/student", subprotocols=token_protocols(other["token"])
    ) as ws:
        ws.receive_json()
        client.post(f"/api/sessions/{session['id']}/end", headers=headers)
        ended = next_json(ws, lambda m: m["type"] == "session_ended")
        assert ended["session_id"] == session["id"]
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 4403
    assert _refused(client, other["token"]) == (4403, "session ended")


def test_self_view_gets_this_students_updates_only(joined, clean_redis):
    client, _, session, student = joined
    other = join(client, session["join_code"], "Bob")
    update = student_update(
        session, student, emotion="happy", confidence=0.9, probs={"happy": 0.9, "sad": 0.1}
    )
    noise = student_update(session, other, emotion="sad")
    with client.websocket_connect(
        "/ws/student", subprotocols=token_protocols(student["token"])
    ) as ws:
        ws.receive_json()
        next_json(ws, lambda m: m["type"] == "self" and m["presence"] == "present")
        clean_redis.publish(contracts.live_channel(session["id"]), contracts.encoder.encode(noise))
        clean_redis.publish(contracts.live_channel(session["id"]), contracts.encoder.encode(update))
        got = next_json(ws, lambda m: m["type"] == "self")
        assert (
            got["kind"] == "student" and got["emotion"] == "happy" and got["probs"]["happy"] == 0.9
        )
        assert got["student_id"] == student["student_id"]
