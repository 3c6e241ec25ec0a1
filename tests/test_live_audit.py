"""Per-student data on the teacher's live feed: a dashboard left open while the policy becomes
``per_student`` is audited as a per-student view, and a withdrawn student's last estimate is
neither kept for nor shown to dashboards that connect later."""

from __future__ import annotations

import json
import time

import pytest
from starlette.websockets import WebSocketDisconnect

from classpulse import contracts as c
from classpulse.policy import Policy, write_mirror
from tests.gateway_helpers import next_json, student_update, token_protocols
from tests.privacy_helpers import a_class, rows

VIEW_LIVE = "SELECT count(*) FROM audit_log WHERE action = 'view.live'"


def _live(k):
    """Connect the teacher's dashboard socket."""
    token = k.teacher["Authorization"].split()[1]
    return k.client.websocket_connect(
        f"/ws/sessions/{k.session['id']}/live", subprotocols=token_protocols(token)
    )


def _is_policy(mode: str):
    return lambda m: m.get("type") == "policy" and m.get("emotion_mode") == mode


def test_an_open_dashboard_is_audited_when_the_policy_becomes_per_student(settings, clean_redis):
    with a_class(settings) as k:
        k.put_policy(emotion_mode="aggregate_only")
        with _live(k) as ws:
            assert ws.receive_json()["policy"]["emotion_mode"] == "aggregate_only"
            assert rows(settings, VIEW_LIVE) == [(0,)]  # no per-student data shown yet

            k.put_policy(emotion_mode="per_student")
            next_json(ws, _is_policy("per_student"))
            # Recorded before the policy message (and any per-student update after it) is sent.
            assert rows(settings, VIEW_LIVE) == [(1,)]
            (detail,) = rows(settings, "SELECT detail FROM audit_log WHERE action = 'view.live'")
            assert detail[0].get("reason") == "policy changed"

            # Once per socket: switching away and back again does not audit it twice.
            k.put_policy(emotion_mode="off")
            next_json(ws, _is_policy("off"))
            k.put_policy(emotion_mode="per_student")
            next_json(ws, _is_policy("per_student"))
            assert rows(settings, VIEW_LIVE) == [(1,)]
        # A dashboard opened under per_student is audited at connect, as before.
        with _live(k) as ws:
            ws.receive_json()
        assert rows(settings, VIEW_LIVE) == [(2,)]


def test_a_per_student_update_reaching_an_unaudited_dashboard_is_audited(settings, clean_redis):
    with a_class(settings) as k:
        ada = k.join("Ada")
        k.put_policy(emotion_mode="aggregate_only")
        with _live(k) as ws:
            ws.receive_json()
            # No emotion: presence only, as the aggregator publishes it outside per_student.
            plain = student_update(k.session, ada, faces=1)
            clean_redis.publish(c.live_channel(k.session["id"]), c.encoder.encode(plain))
            next_json(ws, lambda m: m.get("type") == "student")
            assert rows(settings, VIEW_LIVE) == [(0,)]
            # An estimate published while this gateway's policy is aggregate_only (e.g. the
            # aggregator applied per_student first): the hub withholds it, nothing to audit.
            happy = student_update(k.session, ada, emotion="happy", probs={"happy": 1.0}, faces=1)
            clean_redis.publish(c.live_channel(k.session["id"]), c.encoder.encode(happy))
            withheld = next_json(ws, lambda m: m.get("type") == "student")
            assert withheld["emotion"] is None and withheld["probs"] is None
            assert withheld["faces"] == 1 and rows(settings, VIEW_LIVE) == [(0,)]
            # The gateway reads per_student from the mirror before the policy message reaches
            # this socket: the estimate gets through, audited before it is sent.
            write_mirror(clean_redis, Policy("per_student"), stamp=2**62)
            deadline = time.monotonic() + 5
            while True:  # until the gateway's policy cache has read the mirror (0.5 s)
                clean_redis.publish(c.live_channel(k.session["id"]), c.encoder.encode(happy))
                if next_json(ws, lambda m: m.get("type") == "student")["emotion"] == "happy":
                    break
                assert rows(settings, VIEW_LIVE) == [(0,)]
                assert time.monotonic() < deadline, "the gateway never read the mirror"
                time.sleep(0.05)
            assert rows(settings, VIEW_LIVE) == [(1,)]


def _store_estimate(r, k, student) -> None:
    update = student_update(k.session, student, emotion="sad", probs={"sad": 0.9}, faces=1)
    r.hset(c.snapshot_key(k.session["id"]), student["student_id"], c.encoder.encode(update))


def _snapshot_of(k, name: str) -> dict:
    with _live(k) as ws:
        snap = ws.receive_json()
    (student,) = [s for s in snap["students"] if s["display_name"] == name]
    return student


def test_withdrawal_drops_the_students_last_estimate_for_late_dashboards(settings, clean_redis):
    with a_class(settings) as k:
        ada, bo, cy = k.join("Ada"), k.join("Bo"), k.join("Cy")
        for s in (ada, bo, cy):
            _store_estimate(clean_redis, k, s)
        key = c.snapshot_key(k.session["id"])

        # Withdrawn through the REST call: the entry is gone from the snapshot hash.
        r = k.client.post(
            "/api/student/withdraw", headers={"Authorization": "Bearer " + ada["token"]}
        )
        assert r.status_code == 204
        assert clean_redis.hget(key, ada["student_id"]) is None
        # Withdrawn over the student socket: the same.
        with k.client.websocket_connect(
            "/ws/student", subprotocols=token_protocols(bo["token"])
        ) as ws:
            ws.receive_json()  # config
            ws.send_json({"type": "withdraw"})
            with pytest.raises(WebSocketDisconnect):  # closed once the withdrawal is recorded
                while True:
                    ws.receive_json()
        assert clean_redis.hget(key, bo["student_id"]) is None
        # Presence is kept (the tile says "withdrew"), and Cy's estimate is untouched.
        presence = json.loads(clean_redis.hget(c.presence_key(k.session["id"]), ada["student_id"]))
        assert presence["presence"] == "withdrawn"
        assert clean_redis.hget(key, cy["student_id"]) is not None

        # An update the aggregator had in flight stores Ada's estimate again after the
        # withdrawal: the snapshot still shows none of it.
        _store_estimate(clean_redis, k, ada)
        a = _snapshot_of(k, "Ada")
        assert a["withdrawn"] is True and a["emotion"] is None
        assert a["presence"]["presence"] == "withdrawn"
        b = _snapshot_of(k, "Bo")
        assert b["withdrawn"] is True and b["emotion"] is None
        assert _snapshot_of(k, "Cy")["emotion"]["emotion"] == "sad"
