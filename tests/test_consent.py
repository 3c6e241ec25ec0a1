"""Consent records: every join answers the notice (accepted or declined), a declined student
attends without analysis, and withdrawing mid-session stops analysis at once, recorded."""

from __future__ import annotations

import json

import pytest
from starlette.websockets import WebSocketDisconnect

from app.consent import CONSENT_VERSION
from classpulse import contracts as c
from classpulse.settings import Settings
from tests.gateway_helpers import next_json, token_protocols
from tests.privacy_helpers import Pipeline, a_class, rows, send_frames
from tests.stream_helpers import jpeg
from worker.pipeline import FramePipeline


@pytest.fixture(scope="module")
def model() -> FramePipeline:
    return FramePipeline.from_settings(Settings(providers=["cpu"]))


@pytest.fixture
def pipe(settings, clean_redis, model):
    p = Pipeline(settings, clean_redis, model)
    yield p
    p.close()


def consent_records(settings, student_id):
    return rows(
        settings,
        "SELECT action, consent_version FROM consent_records WHERE student_id = %s ORDER BY id",
        student_id,
    )


def test_a_join_records_the_accepted_version(settings, clean_redis):
    with a_class(settings) as k:
        info = k.client.get(f"/api/join/{k.session['join_code']}").json()
        assert info["emotion_mode"] == "per_student"  # the page tells the student up front
        ada = k.join("Ada")
        assert ada["analysis"] is True
    assert consent_records(settings, ada["student_id"]) == [("accepted", CONSENT_VERSION)]
    assert rows(settings, "SELECT consent_version FROM students") == [(CONSENT_VERSION,)]


def test_a_declined_student_attends_without_analysis(settings, clean_redis):
    with a_class(settings) as k:
        bo = k.join("Bo", consent=False)
        assert bo["analysis"] is False and bo["token"]
        with k.client.websocket_connect(
            "/ws/student", subprotocols=token_protocols(bo["token"])
        ) as ws:
            ws.receive_json()  # config
            update = next_json(ws, lambda m: m["type"] == "self")
            assert update["presence"] == "no_analysis"
            ws.send_bytes(jpeg())  # a page that sends anyway is refused
            ack = next_json(ws, lambda m: m["type"] == "ack")
            assert ack == {"type": "ack", "seq": 1, "ok": False, "reason": "no_consent"}
            ws.send_text('{"type": "camera", "state": "on"}')
            update = next_json(ws, lambda m: m["type"] == "self")
            assert update["presence"] == "no_analysis"
        assert clean_redis.xlen(c.FRAMES_STREAM) == 0
        me = k.client.get("/api/student/me", headers={"Authorization": "Bearer " + bo["token"]})
        assert me.json()["consent"] == "declined" and me.json()["frames"] == 0
        roster = k.client.get(f"/api/sessions/{k.session['id']}/students", headers=k.teacher)
        assert [s["display_name"] for s in roster.json()] == ["Bo"]
    assert consent_records(settings, bo["student_id"]) == [("declined", CONSENT_VERSION)]
    assert rows(settings, "SELECT consent_version, consent_at FROM students") == [(None, None)]


def test_withdrawal_mid_session_stops_analysis_at_once(settings, clean_redis, pipe):
    with a_class(settings) as k:
        ada = k.join("Ada")
        student = {"Authorization": "Bearer " + ada["token"]}
        with k.client.websocket_connect(
            "/ws/student", subprotocols=token_protocols(ada["token"])
        ) as ws:
            ws.receive_json()
            ws.send_bytes(jpeg())
            assert next_json(ws, lambda m: m["type"] == "ack")["ok"]
            pipe.run()
            ws.send_bytes(jpeg())  # accepted, still in the stream when the student withdraws
            assert next_json(ws, lambda m: m["type"] == "ack")["ok"]

            r = k.client.post("/api/student/withdraw", headers=student)  # from the page's button
            assert r.status_code == 204
            # The socket learns at once, refuses what is still sent, and closes.
            with pytest.raises(WebSocketDisconnect) as closed:
                for _ in range(20):
                    ws.send_bytes(jpeg())
                    msg = ws.receive_json()
                    if msg["type"] == "ack":
                        assert msg == {**msg, "ok": False, "reason": "withdrawn"}
            assert closed.value.reason == "withdrawn"
        # The frame still in the stream at the withdrawal is never analysed, nor stored.
        assert pipe.run() == 0
        assert int(clean_redis.hget(c.STATS_KEY, "worker.dropped.withdrawn")) == 1
        assert len(pipe.results()) == 1  # the first frame's only
        ((frames, faced, sums),) = rows(
            settings, "SELECT frames, frames_with_face, prob_sums FROM emotion_buckets"
        )
        assert (frames, faced) == (1, 1) and sum(sums.values()) == pytest.approx(1.0, abs=1e-3)
        # A reconnect is refused; a second withdrawal records nothing new.
        with k.client.websocket_connect(
            "/ws/student", subprotocols=token_protocols(ada["token"])
        ) as ws:
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
            assert closed.value.reason == "withdrawn"
        assert k.client.post("/api/student/withdraw", headers=student).status_code == 204
        # The teacher's dashboard shows the withdrawal; the student's own view says so too.
        presence = json.loads(clean_redis.hget(c.presence_key(k.session["id"]), ada["student_id"]))
        assert presence["presence"] == "withdrawn"
        token = k.teacher["Authorization"].split()[1]
        with k.client.websocket_connect(
            f"/ws/sessions/{k.session['id']}/live", subprotocols=token_protocols(token)
        ) as ws:
            assert ws.receive_json()["students"][0]["withdrawn"] is True
        me = k.client.get("/api/student/me", headers=student).json()
        assert me["consent"] == "withdrawn"
        assert [e["action"] for e in me["consent_history"]] == ["accepted", "withdrawn"]
    assert consent_records(settings, ada["student_id"]) == [
        ("accepted", CONSENT_VERSION),
        ("withdrawn", CONSENT_VERSION),
    ]
    ((withdrawn_at,),) = rows(settings, "SELECT withdrawn_at FROM students")
    assert withdrawn_at is not None


def test_withdrawal_over_the_socket_is_recorded(settings, clean_redis):
    with a_class(settings) as k:
        ada = k.join("Ada")
        send_frames(k.client, ada["token"])
        with k.client.websocket_connect(
            "/ws/student", subprotocols=token_protocols(ada["token"])
        ) as ws:
            ws.receive_json()
            ws.send_text('{"type": "withdraw"}')
            with pytest.raises(WebSocketDisconnect) as closed:
                for _ in range(10):
                    ws.receive_json()
            assert closed.value.reason == "withdrawn"
    assert [a for a, _ in consent_records(settings, ada["student_id"])] == ["accepted", "withdrawn"]


def test_the_notice_says_what_facing_the_screen_observes_and_the_old_one_is_refused(settings):
    """The notice before the attention switch existed ("2026-12-6") no longer admits a join:
    the student reads the one that says what "facing the screen" observes."""
    with a_class(settings) as k:
        code = k.session["join_code"]
        info = k.client.get(f"/api/join/{code}").json()
        assert info["consent_version"] == CONSENT_VERSION != "2026-12-6"
        assert info["attention"] is False  # the join page can say whether it applies
        k.put_policy(attention=True)
        assert k.client.get(f"/api/join/{code}").json()["attention"] is True
        text = " ".join(info["consent_text"].split())
        for words in (
            'Only when the school has switched on "Facing the screen"',
            "whether you face the screen or turn away, and for how long",
            "no expression and no emotion is read from it",
            "it is not a judgement of your attention",
        ):
            assert words in text, words
        body = {"display_name": "Ada", "consent": True, "consent_version": "2026-12-6"}
        r = k.client.post(f"/api/join/{code}", json=body)
        assert r.status_code == 409 and CONSENT_VERSION in r.json()["detail"]
