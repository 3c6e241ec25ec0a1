"""The student socket's text protocol as data (classpulse/socket_messages.py): every message
round-trips as the pages send and read it; each malformed shape is refused with its reason, at
the door of a real socket too; schema versions are checked where messages are consumed."""

from __future__ import annotations

import dataclasses
import json
import time

import msgspec
import pytest
from starlette.websockets import WebSocketDisconnect

from app.policy_views import policy_message
from classpulse import contracts, edge_wire
from classpulse import socket_messages as sm
from classpulse.policy import Policy
from tests.db_helpers import frame_result
from tests.gateway_helpers import joined_session, next_json, student_update, token_protocols
from tests.pipeline_helpers import Aggregator

# What the pages send, as they write it (web/static/js/student/live.js, camera.js, lib/socket.js).
PAGE_SENDS = {
    '{"type":"camera","state":"on"}': sm.Camera(state="on"),
    '{"type":"camera","state":"off"}': sm.Camera(state="off"),
    '{"type":"stats","captured":12,"capture":"edge","detector_ms":7.25}': sm.Stats(
        captured=12, capture="edge", detector_ms=7.25
    ),
    '{"type":"stats","captured":3,"capture":"frames","fallback":"too_slow"}': sm.Stats(
        captured=3, capture="frames", fallback="too_slow"
    ),
    '{"type":"withdraw"}': sm.Withdraw(),
    '{"type":"ping"}': sm.Ping(),
}


@pytest.mark.parametrize("text", list(PAGE_SENDS))
def test_every_incoming_message_round_trips(text):
    msg = sm.parse(text)
    assert msg == PAGE_SENDS[text]
    assert json.loads(msgspec.json.encode(msg)) == json.loads(text)  # v=1 is the default, unsaid
    assert sm.parse(msgspec.json.encode(msg).decode()) == msg
    assert sm.parse(json.dumps({**json.loads(text), "v": 1})) == msg  # a page may say it


def test_stats_bounds_are_inclusive_where_the_page_may_reach_them():
    top = sm.parse(json.dumps({"type": "stats", "captured": sm.MAX_CAPTURED, "detector_ms": 0}))
    assert isinstance(top, sm.Stats) and (top.captured, top.detector_ms) == (sm.MAX_CAPTURED, 0)
    nulls = sm.parse('{"type":"stats","captured":0,"capture":null,"detector_ms":null}')
    assert nulls == sm.Stats(captured=0)
    assert sm.parse('{"type":"ping","later":"fields a newer page adds"}') == sm.Ping()


NOT_OBJECT = 'text messages must be JSON objects with a "type"'
CAMERA = 'camera messages need "state": "on" or "off"'
CAPTURED = 'stats messages need "captured"'
REFUSED = {
    "hello": NOT_OBJECT,
    "": NOT_OBJECT,
    "[1, 2]": NOT_OBJECT,
    '"camera"': NOT_OBJECT,
    "null": NOT_OBJECT,
    "{}": NOT_OBJECT,
    '{"state": "on"}': NOT_OBJECT,
    '{"type": "ping"} {"type": "ping"}': NOT_OBJECT,
    '{"type": "dance"}': "unknown message type 'dance'; expected camera, stats, withdraw, ping",
    '{"type": 5}': "unknown message type; expected camera, stats, withdraw, ping",
    '{"type": "camera"}': CAMERA,
    '{"type": "camera", "state": "maybe"}': CAMERA,
    '{"type": "camera", "state": true}': CAMERA,
    '{"type": "stats"}': CAPTURED,
    '{"type": "stats", "capture": "edge"}': CAPTURED,
    '{"type": "stats", "captured": -3}': CAPTURED,
    '{"type": "stats", "captured": 1.5}': CAPTURED,
    '{"type": "stats", "captured": true}': CAPTURED,
    '{"type": "stats", "captured": 100001}': CAPTURED,
    '{"type": "stats", "captured": 1, "capture": "gpu"}': '"capture" must be "edge" or "frames"',
    '{"type": "stats", "captured": 1, "detector_ms": -1}': '"detector_ms" must be',
    '{"type": "stats", "captured": 1, "detector_ms": 60000}': '"detector_ms" must be',
    '{"type": "stats", "captured": 1, "detector_ms": "fast"}': '"detector_ms" must be',
    '{"type": "stats", "captured": 1, "detector_ms": true}': '"detector_ms" must be',
    '{"type": "stats", "captured": 1, "detector_ms": 1e400}': '"detector_ms" must be',
    '{"type": "stats", "captured": 1, "fallback": "bored"}': '"fallback" must be one of',
    '{"type": "ping", "v": 2}': '"v" must be 1',
    '{"type": "camera", "state": "on", "v": "1"}': '"v" must be 1',
}


@pytest.mark.parametrize("text", list(REFUSED))
def test_each_malformed_shape_is_refused_with_its_reason(text):
    with pytest.raises(sm.MessageError) as refused:
        sm.parse(text)
    assert str(refused.value).startswith(REFUSED[text])


def test_oversize_text_is_refused_before_it_is_decoded():
    padded = '{"type": "ping"' + " " * (sm.MAX_TEXT_CHARS - 16) + "}"
    assert len(padded) == sm.MAX_TEXT_CHARS and sm.parse(padded) == sm.Ping()
    for text in (padded[:-1] + " }", "x" * 200_000):
        with pytest.raises(sm.MessageError) as refused:
            sm.parse(text)
        assert f"at most {sm.MAX_TEXT_CHARS} characters" in str(refused.value)
        assert "binary JPEG" in str(refused.value)  # what the page should have sent instead


def _config() -> sm.Config:
    return sm.Config(
        fps=2.0,
        max_fps=5.0,
        max_in_flight=2,
        capture="edge",
        frames_allowed=True,
        presence_width=192,
        presence_height=144,
        detector_url=contracts.EDGE_DETECTOR_URL,
        faces_version=edge_wire.VERSION,
        max_faces=32,
        detector_score_threshold=None,
        detector_iou_threshold=0.3,
        min_face_size=20,
        crop_size=64,
        crop_scale=1.1,
        emotion_mode="per_student",
    )


Out = (
    sm.Config | sm.Ack | sm.Rate | sm.Error | sm.Pong | sm.SessionEnded | sm.PolicyMessage
) | sm.SelfUpdate
OUTGOING = {
    "config": _config(),
    "ack": sm.Ack(7, True),
    "nack": sm.Ack(8, False, "rate_limited"),
    "rate": sm.Rate(0.5, "worker_lag"),
    "error": sm.Error("camera messages need a state"),
    "pong": sm.Pong(),
    "session_ended": sm.SessionEnded("s-1", 1.5),
    "policy": sm.PolicyMessage(t=2.5, **Policy("aggregate_only", 7, 30, True).as_dict()),
    "self": sm.SelfUpdate(kind="presence", session_id="s-1", student_id="u-1", t=3.0),
}


@pytest.mark.parametrize("name", list(OUTGOING))
def test_every_outgoing_message_round_trips(name):
    msg = OUTGOING[name]
    text = sm.encode(msg)
    assert msgspec.json.decode(text, type=Out) == msg
    assert json.loads(text)["type"] == type(msg).__struct_config__.tag


def test_outgoing_json_is_what_the_pages_read():
    """live.js reads these fields by name; the config's are checked by config.js."""
    assert json.loads(sm.encode(sm.Ack(7, True))) == {"type": "ack", "seq": 7, "ok": True}
    assert json.loads(sm.encode(sm.Ack(8, False, "too_large"))) == {
        "type": "ack",
        "seq": 8,
        "ok": False,
        "reason": "too_large",
    }
    assert json.loads(sm.encode(sm.Rate(1.0, "normal"))) == {
        "type": "rate",
        "fps": 1.0,
        "reason": "normal",
    }
    assert json.loads(sm.encode(sm.Error("x"))) == {"type": "error", "message": "x"}
    assert json.loads(sm.encode(sm.Pong())) == {"type": "pong"}
    config = json.loads(sm.encode(_config()))
    assert (config["width"], config["height"], config["jpeg_quality"]) == (320, 240, 0.7)
    assert len(config) == len(msgspec.structs.fields(sm.Config)) + 1  # every field, and "type"


def test_policy_message_follows_the_policy_fields():
    """Fields added to Policy (attention...) reach the page without a copy here to update."""
    names = {f.name for f in msgspec.structs.fields(sm.PolicyMessage)}
    assert names == {f.name for f in dataclasses.fields(Policy)} | {"t"}
    policy = Policy("off", 3, 10, attention=True)
    published = policy_message(policy)
    relayed = sm.relay(published)
    assert isinstance(relayed, sm.PolicyMessage)
    assert json.loads(sm.encode(relayed)) == json.loads(published)


def test_relay_of_the_session_channel():
    update = contracts.LiveUpdate(
        type="student",
        session_id="s-1",
        student_id="u-1",
        t=4.0,
        emotion="happy",
        confidence=0.8,
        probs={"happy": 0.8},
        facing=True,
    )
    mine = sm.relay(contracts.encoder.encode(update))
    fields = msgspec.structs.asdict(update)
    kind, _ = fields.pop("type"), fields.pop("v")  # v: checked here, read by no page
    assert json.loads(sm.encode(mine)) == {"type": "self", "kind": kind, **fields}
    gone = contracts.LiveUpdate(
        type="presence", session_id="s-1", student_id="u-1", t=5.0, presence="withdrawn"
    )
    assert sm.withdrawal(sm.relay(contracts.encoder.encode(gone)))
    assert not sm.withdrawal(mine)
    ended = contracts.encoder.encode({"type": "session_ended", "session_id": "s-1", "t": 6.0})
    assert sm.relay(ended) == sm.SessionEnded("s-1", 6.0)
    assert sm.relay(b'{"type":"class","present":3,"counts":{"happy":2}}') is None
    newer = msgspec.structs.replace(update, v=contracts.SCHEMA_VERSION + 1)
    for bad, why in (
        (contracts.encoder.encode(newer), "schema version 2"),  # LiveUpdate.v: checked here
        (b'{"type":"alert","rule":"x"}', "unknown type 'alert'"),
        (b'{"type":"student","t":1}', "malformed"),
        (b'{"type":"session_ended"}', "malformed"),
        (b'{"type":"policy","t":1,"emotion_mode":"sometimes"}', "malformed"),
        (b"\xff", "malformed"),
    ):
        with pytest.raises(sm.MessageError, match=why):
            sm.relay(bad)


# --- at the door of a real socket --------------------------------------------------------------
def _errors(ws, texts):
    out = []
    for text in texts:
        ws.send_text(text)
        out.append(next_json(ws, lambda m: m["type"] == "error")["message"])
    return out


def test_the_socket_answers_each_refusal_and_closes_after_too_many(settings, clean_redis):
    settings = settings.model_copy(update={"control_messages_per_second": 1000.0})
    with (
        joined_session(settings) as (client, _, session, student),
        client.websocket_connect(
            "/ws/student", subprotocols=token_protocols(student["token"])
        ) as ws,
    ):
        assert ws.receive_json()["type"] == "config"
        texts = ['{"type": "ping", "v": 2}', "x" * (sm.MAX_TEXT_CHARS + 1), '{"type": "dance"}']
        assert _errors(ws, texts) == [str(_refusal(t)) for t in texts]
        ws.send_text('{"type": "ping"}')  # a good message resets the count
        next_json(ws, lambda m: m["type"] == "pong")
        # A stale LiveUpdate schema is not shown; the current one is.
        channel = contracts.live_channel(session["id"])
        newer = student_update(session, student, emotion="sad", v=contracts.SCHEMA_VERSION + 1)
        clean_redis.publish(channel, contracts.encoder.encode(newer))
        clean_redis.publish(channel, contracts.encoder.encode(student_update(session, student)))
        got = next_json(ws, lambda m: m["type"] == "self" and m["kind"] == "student")
        assert got["emotion"] is None and "v" not in got
        for _ in range(50):  # MAX_PROTOCOL_ERRORS in a row
            ws.send_text("[]")
        with pytest.raises(WebSocketDisconnect) as closed:
            while True:
                ws.receive_json()
        assert (closed.value.code, closed.value.reason) == (1008, "too many protocol errors")


def _refusal(text: str) -> sm.MessageError:
    try:
        sm.parse(text)
    except sm.MessageError as exc:
        return exc
    raise AssertionError(f"{text!r} was taken")


# --- FrameResult.v where results are consumed: the aggregator ----------------------------------
def test_the_aggregator_drops_a_result_of_another_schema_as_malformed(
    settings, clean_redis, engine, roster
):
    current = frame_result(roster, "ada", 1)
    newer = msgspec.structs.replace(frame_result(roster, "bo", 2), v=contracts.SCHEMA_VERSION + 1)
    entries = [
        (f"{int(time.time() * 1000)}-{n}", {contracts.R_DATA: contracts.encoder.encode(res)})
        for n, res in enumerate((current, newer))
    ]
    assert Aggregator(settings, clean_redis, engine).handle(entries) == 1
    stats = clean_redis.hgetall(contracts.STATS_KEY)
    assert stats[b"aggregator.applied"] == b"1" and stats[b"aggregator.malformed"] == b"1"
