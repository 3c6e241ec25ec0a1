"""The organisation's policy end to end: gateway → worker → aggregator → PostgreSQL and the live
feeds, in each mode, switched between frames, and honoured by the REST reads."""

from __future__ import annotations

import json
import time

import pytest

from classpulse import contracts as c
from classpulse.policy import Policy, write_mirror
from tests import pipeline_helpers
from tests import stream_helpers as streams
from tests.gateway_helpers import token_protocols
from tests.privacy_helpers import Pipeline, a_class, rows, send_frames
from tests.stream_helpers import add_frame, make_result, push, run_aggregator

pipeline = streams.pipeline  # the stream tests' fixture: the models, loaded once per module
classify_calls = pipeline_helpers.classify_calls  # the emotion model's calls, counted


@pytest.fixture
def pipe(settings, clean_redis, pipeline):
    p = Pipeline(settings, clean_redis, pipeline)
    yield p
    p.close()


def merged(buckets):
    """Bucket rows folded into one (frames, frames_with_face, prob_sums), or [] when none: a
    test's frames may straddle a time-bucket boundary, which must not change its assertions."""
    if not buckets:
        return []
    sums: dict[str, float] = {}
    for _, _, s in buckets:
        for label, v in s.items():
            sums[label] = sums.get(label, 0.0) + v
    return [(sum(b[0] for b in buckets), sum(b[1] for b in buckets), sums)]


def student_buckets(settings, student_id):
    return merged(
        rows(
            settings,
            "SELECT frames, frames_with_face, prob_sums FROM emotion_buckets WHERE student_id = %s",
            student_id,
        )
    )


def class_buckets(settings, session_id):
    return merged(
        rows(
            settings,
            "SELECT frames, frames_with_face, prob_sums FROM class_buckets WHERE session_id = %s",
            session_id,
        )
    )


def snapshot_of(r, session_id, student_id):
    raw = r.hget(c.snapshot_key(session_id), student_id)
    return json.loads(raw) if raw else None


# --- the API -------------------------------------------------------------------------------
def test_policy_api_is_admin_only_validated_and_audited(settings, clean_redis):
    with a_class(settings) as k:
        got = k.client.get("/api/admin/policy", headers=k.admin).json()
        assert (got["emotion_mode"], got["min_group_size"], got["retention_days"]) == (
            "per_student",
            5,
            30,
        )
        # The gateway mirrored PostgreSQL's policy to Redis at start-up.
        assert clean_redis.hget(c.POLICY_KEY, "emotion_mode") == b"per_student"
        assert k.client.get("/api/admin/policy", headers=k.teacher).status_code == 403
        r = k.client.put("/api/admin/policy", json={"emotion_mode": "off"}, headers=k.teacher)
        assert r.status_code == 403
        assert k.client.put("/api/admin/policy", json={"emotion_mode": "off"}).status_code == 401

        for body, message in (
            ({"emotion_mode": "sometimes"}, "emotion_mode must be one of"),
            ({"min_group_size": 0}, "min_group_size must be between 1 and"),
            ({"retention_days": 0}, "retention_days must be between 1 and"),
            ({"retention_days": 100_000}, "retention_days must be between 1 and"),
            ({"min_group_size": "many"}, "body.min_group_size"),
            ({"attention": "yes"}, "body.attention"),
        ):
            r = k.client.put("/api/admin/policy", json=body, headers=k.admin)
            assert r.status_code == 422 and message in r.json()["detail"], (body, r.text)

        out = k.put_policy(emotion_mode="aggregate_only", min_group_size=3)
        assert out["emotion_mode"] == "aggregate_only" and out["min_group_size"] == 3
        assert out["retention_days"] == 30 and out["updated_by"] == "admin@school.example"
        assert clean_redis.hget(c.POLICY_KEY, "emotion_mode") == b"aggregate_only"
    entries = rows(settings, "SELECT action, actor_email, detail FROM audit_log ORDER BY id")
    assert [e[0] for e in entries] == ["policy.update"]  # refused changes leave no entry
    _, actor, detail = entries[0]
    assert actor == "admin@school.example"
    assert detail["before"]["emotion_mode"] == "per_student"
    assert detail["after"] == {
        "emotion_mode": "aggregate_only",
        "min_group_size": 3,
        "retention_days": 30,
        "attention": False,
    }
    assert rows(settings, "SELECT emotion_mode, min_group_size FROM org_policy") == [
        ("aggregate_only", 3)
    ]


def test_gateway_restores_a_lost_mirror_from_postgresql(settings, clean_redis):
    with a_class(settings) as k:
        k.put_policy(emotion_mode="off")
        clean_redis.delete(c.POLICY_KEY)  # Redis restarted without its data
        deadline = time.time() + 5
        while time.time() < deadline and not clean_redis.exists(c.POLICY_KEY):
            time.sleep(0.05)
        assert clean_redis.hget(c.POLICY_KEY, "emotion_mode") == b"off"


# --- each mode end to end ------------------------------------------------------------------
def test_per_student_mode_end_to_end(settings, clean_redis, pipe, classify_calls):
    with a_class(settings) as k:
        ada = k.join("Ada")
        acks = send_frames(k.client, ada["token"], 2)
        assert all(a["ok"] for a in acks)
        assert pipe.run() == 2
        assert classify_calls and sum(classify_calls) == 2
        assert {r.mode for r in pipe.results()} == {"per_student"}
        ((frames, faced, sums),) = student_buckets(settings, ada["student_id"])
        assert (frames, faced) == (2, 2) and sum(sums.values()) == pytest.approx(2.0, abs=1e-3)
        ((cframes, cfaced, csums),) = class_buckets(settings, k.session["id"])
        assert (cframes, cfaced) == (2, 2) and csums == pytest.approx(sums)
        live = snapshot_of(clean_redis, k.session["id"], ada["student_id"])
        assert live["probs"] and live["emotion"]


def test_aggregate_only_stores_no_per_student_emotion(settings, clean_redis, pipe, classify_calls):
    with a_class(settings) as k:
        k.put_policy(emotion_mode="aggregate_only", min_group_size=2)
        ada, bo = k.join("Ada"), k.join("Bo")
        pubsub = clean_redis.pubsub()
        pubsub.subscribe(c.live_channel(k.session["id"]))
        send_frames(k.client, ada["token"], 2)
        pipe.run()
        # One student with a face: fewer than min_group_size, so no class mix is published.
        klass = json.loads(clean_redis.get(c.class_live_key(k.session["id"])))
        assert klass["suppressed"] and klass["present"] == 1 and klass["counts"] is None
        send_frames(k.client, bo["token"], 2)
        pipe.aggregator.class_mix._published.clear()  # skip the one-second publish throttle
        pipe.run()
        klass = json.loads(clean_redis.get(c.class_live_key(k.session["id"])))
        assert not klass["suppressed"] and klass["present"] == 2
        assert sum(klass["counts"].values()) + klass["uncertain"] == 2

        assert sum(classify_calls) == 4  # the model runs: the class mix needs it
        assert {r.mode for r in pipe.results()} == {"aggregate_only"}
        # The database holds no per-student emotion: presence counts only.
        per_student = rows(
            settings,
            "SELECT student_id, sum(frames_with_face), bool_and(prob_sums = '{}'::jsonb)"
            " FROM emotion_buckets GROUP BY student_id",
        )
        assert len(per_student) == 2
        assert all(empty and faced == 2 for _, faced, empty in per_student)
        ((cframes, cfaced, csums),) = class_buckets(settings, k.session["id"])
        assert (cframes, cfaced) == (4, 4) and sum(csums.values()) == pytest.approx(4.0, abs=1e-3)
        # Neither the snapshot nor the live feed carries a per-student estimate.
        for sid in (ada["student_id"], bo["student_id"]):
            live = snapshot_of(clean_redis, k.session["id"], sid)
            assert live["faces"] == 1 and not live.get("emotion") and not live.get("probs")
        messages = []
        while (m := pubsub.get_message(timeout=0.2)) is not None or not messages:
            if m and m["type"] == "message":
                messages.append(json.loads(m["data"]))
        pubsub.close()
        students = [m for m in messages if m.get("type") == "student"]
        assert students and all(not m.get("probs") and not m.get("emotion") for m in students)
        # The dashboard's snapshot says which mode is in force and has the class mix.
        token = k.teacher["Authorization"].split()[1]
        with k.client.websocket_connect(
            f"/ws/sessions/{k.session['id']}/live", subprotocols=token_protocols(token)
        ) as ws:
            snap = ws.receive_json()
        assert snap["policy"] == {
            "emotion_mode": "aggregate_only",
            "min_group_size": 2,
            "attention": False,
        }
        assert snap["class"]["present"] == 2
        assert all(s["emotion"]["emotion"] is None for s in snap["students"])
    # Not a per-student view: not audited as one.
    assert rows(settings, "SELECT count(*) FROM audit_log WHERE action = 'view.live'") == [(0,)]


def test_off_mode_never_runs_the_emotion_model(settings, clean_redis, pipe, classify_calls):
    with a_class(settings) as k:
        k.put_policy(emotion_mode="off")
        ada = k.join("Ada")
        send_frames(k.client, ada["token"], 2)
        (fields,) = [f for _, f in clean_redis.xrange(c.FRAMES_STREAM)][:1]
        assert fields[c.F_MODE] == b"off" and fields[c.F_EMOTION] == b"0"
        assert pipe.run() == 2
        assert classify_calls == []  # the emotion model was never called
        results = pipe.results()
        assert all(r.mode == "off" and r.faces and r.faces[0].probs is None for r in results)
        assert "emotion" not in results[0].models or results[0].faces[0].probs is None
        # Presence only, everywhere.
        ((frames, faced, sums),) = student_buckets(settings, ada["student_id"])
        assert (frames, faced, sums) == (2, 2, {})
        assert class_buckets(settings, k.session["id"]) == []
        live = snapshot_of(clean_redis, k.session["id"], ada["student_id"])
        assert live["faces"] == 1 and live["presence"] == "present" and not live.get("probs")


def test_a_policy_switch_applies_from_the_next_frame(settings, clean_redis, pipe, classify_calls):
    with a_class(settings) as k:
        ada = k.join("Ada")

        def student_sum():  # over all buckets: the frames may straddle a bucket boundary
            return sum(
                sum(sums.values()) for _, _, sums in student_buckets(settings, ada["student_id"])
            )

        send_frames(k.client, ada["token"])
        pipe.run()
        assert student_sum() == pytest.approx(1.0, abs=1e-3)

        k.put_policy(emotion_mode="aggregate_only")
        send_frames(k.client, ada["token"])
        pipe.run()
        assert student_sum() == pytest.approx(1.0, abs=1e-3)  # nothing more per student
        class_sum = sum(sum(cs.values()) for _, _, cs in class_buckets(settings, k.session["id"]))
        assert class_sum == pytest.approx(2.0, abs=1e-3)

        calls = len(classify_calls)
        k.put_policy(emotion_mode="off")
        send_frames(k.client, ada["token"])
        pipe.run()
        assert len(classify_calls) == calls  # off: the next frame never reached the model

        k.put_policy(emotion_mode="per_student")
        send_frames(k.client, ada["token"])
        pipe.run()
        assert student_sum() == pytest.approx(2.0, abs=1e-3)
        assert [r.mode for r in pipe.results()] == [
            "per_student",
            "aggregate_only",
            "off",
            "per_student",
        ]
        buckets = student_buckets(settings, ada["student_id"])
        assert (sum(b[0] for b in buckets), sum(b[1] for b in buckets)) == (4, 4)


def test_a_stricter_mirror_overrides_a_stale_stamp(settings, clean_redis, pipe, classify_calls):
    """Another gateway still stamps per_student: the worker and the aggregator read the mirror
    themselves and apply the stricter mode."""
    with a_class(settings) as k:
        ada = k.join("Ada")
        roster = {"session": k.session["id"], "ada": ada["student_id"]}
        write_mirror(clean_redis, Policy("off"), stamp=2**62)
        add_frame(clean_redis, roster, seq=1)
        ((entry_id, fields),) = clean_redis.xrange(c.FRAMES_STREAM)
        assert fields[c.F_EMOTION] == b"1" and c.F_MODE not in fields  # as an older gateway sends
        pipe.run()
        assert classify_calls == []
        assert pipe.results()[0].mode == "off"

        write_mirror(clean_redis, Policy("aggregate_only"), stamp=2**62 + 1)
        push(
            clean_redis, [make_result(roster, "ada", time.time() * 1000, 0.9)]
        )  # stamped per_student
        run_aggregator(pipe.aggregator)
        assert all(s == {} for _, _, s in student_buckets(settings, ada["student_id"]))


# --- reads honour the policy in force --------------------------------------------------------
def test_rest_reads_hide_per_student_emotion_outside_per_student(settings, clean_redis, pipe):
    with a_class(settings) as k:
        ada = k.join("Ada")
        send_frames(k.client, ada["token"], 2)
        pipe.run()  # stored under per_student
        path = f"/api/sessions/{k.session['id']}/history/students/{ada['student_id']}"
        (bucket,) = k.client.get(path, headers=k.teacher).json()["rows"]
        assert bucket["probs"] and bucket["dominant"]
        token = k.teacher["Authorization"].split()[1]
        with k.client.websocket_connect(
            f"/ws/sessions/{k.session['id']}/live", subprotocols=token_protocols(token)
        ) as ws:
            assert ws.receive_json()["students"][0]["emotion"]["probs"]
        assert rows(
            settings, "SELECT action FROM audit_log WHERE action LIKE 'view.%%' ORDER BY id"
        ) == [
            ("view.history",),
            ("view.live",),
        ]

        k.put_policy(emotion_mode="aggregate_only")
        assert k.client.get(path, headers=k.teacher).status_code == 403  # no per-student read
        (bucket,) = k.client.get(
            f"/api/sessions/{k.session['id']}/history", headers=k.teacher
        ).json()["rows"]
        assert bucket["probs"] is None and bucket["dominant"] is None and bucket["frames"] == 2
        with k.client.websocket_connect(
            f"/ws/sessions/{k.session['id']}/live", subprotocols=token_protocols(token)
        ) as ws:
            snap = ws.receive_json()
        emotion = snap["students"][0]["emotion"]
        assert emotion["probs"] is None and emotion["emotion"] is None and emotion["faces"] == 1
        me = k.client.get("/api/student/me", headers={"Authorization": "Bearer " + ada["token"]})
        assert me.json()["probs"] is None and me.json()["buckets"][0]["dominant"] is None
        # Still two view entries: reads outside per_student show no per-student data.
        assert rows(settings, "SELECT count(*) FROM audit_log WHERE action LIKE 'view.%%'") == [
            (2,)
        ]
