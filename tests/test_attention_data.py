"""Attention ("facing the screen", docs/attention.md), the data half: the policy switch (stored,
audited, mirrored, stamped into frames), the aggregator's fold and live fields with real Redis
and PostgreSQL, and what leaves the service (API, socket, CSV, PDF) with the switch on and off,
under ``off`` too, where attention is shown and no emotion anywhere."""

from __future__ import annotations

import csv
import io
import re
import time
import uuid
from typing import Any

import msgspec
import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from aggregator.attention import AttentionState
from app.hub import DropOldestQueue, Hub
from classpulse import contracts as c
from classpulse import views
from classpulse.db import ClassBucket, EmotionBucket
from classpulse.head_pose import FACING_YAW_DEG
from classpulse.policy import Policy, write_mirror
from records.reports import CSV_ATTENTION, DEFAULT_LABELS
from tests.gateway_helpers import student_update, token_protocols
from tests.pipeline_helpers import Aggregator
from tests.privacy_helpers import a_class, rows, send_frames
from tests.redaction_helpers import csv_estimates_in, estimates_in
from tests.stream_helpers import push, run_aggregator

T0 = 1_700_000_000_000.0  # on a 5 s bucket boundary
AWAY = FACING_YAW_DEG * 2  # a head turned this far does not face the screen


def result(
    session: str, student: str, t_ms: float, yaw: float | None, happy: float | None = 0.8
) -> c.FrameResult:
    """A worker's result: one face turned by ``yaw`` (None: orientation not observed), with
    probabilities as under per_student unless ``happy`` is None."""
    probs = None
    if happy is not None:
        rest = (1 - happy) / 6
        probs = {"happy": happy, **{k: rest for k in DEFAULT_LABELS if k != "happy"}}
    face = c.Face(box=(10, 10, 80, 80), score=0.9, probs=probs, yaw=yaw, pitch=None)
    if yaw is not None:
        face.pitch = 0.0
    return c.FrameResult(
        frame_id=f"{int(t_ms)}-{uuid.uuid4().hex[:6]}",
        session_id=session,
        student_id=student,
        seq=1,
        received_ms=t_ms,
        processed_ms=t_ms + 20,
        width=320,
        height=240,
        faces=[face],
        models={"emotion": "x"},
        timings_ms={},
    )


def mirror(r: Any, policy: Policy, version: list[int] = [100]) -> None:  # noqa: B006
    """The policy in force for the aggregator (the gateway's mirror, newer each time)."""
    version[0] += 1
    assert write_mirror(r, policy, version[0])


def live_messages(pubsub: Any, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    deadline = time.time() + 3
    while time.time() < deadline and len(out) < n:
        m = pubsub.get_message(timeout=0.2)
        if m and m["type"] == "message":
            out.append(msgspec.json.decode(m["data"]))
    return out


# --- the switch --------------------------------------------------------------------------------
def test_the_switch_is_stored_audited_mirrored_and_stamped_into_each_frame(settings, clean_redis):
    with a_class(settings) as k:
        assert k.client.get("/api/admin/policy", headers=k.admin).json()["attention"] is False
        out = k.put_policy(emotion_mode="off", attention=True)
        assert out["attention"] is True and out["emotion_mode"] == "off"
        assert clean_redis.hget(c.POLICY_KEY, "attention") == b"1"
        ada = k.join("Ada")
        send_frames(k.client, ada["token"], 1)
        k.put_policy(attention=False)  # the emotion mode stays as it was
        assert clean_redis.hget(c.POLICY_KEY, "attention") == b"0"
        send_frames(k.client, ada["token"], 1)
    stamps = [f[c.F_ATTENTION] for _, f in clean_redis.xrange(c.FRAMES_STREAM)]
    assert stamps == [b"1", b"0"]
    details = rows(settings, "SELECT detail FROM audit_log WHERE action = 'policy.update'")
    assert [(d["before"]["attention"], d["after"]["attention"]) for (d,) in details] == [
        (False, True),
        (True, False),
    ]
    assert details[1][0]["after"]["emotion_mode"] == "off"
    assert rows(settings, "SELECT attention FROM org_policy") == [(False,)]


def test_a_mirror_written_before_the_switch_existed_reads_as_off():
    old = {b"emotion_mode": b"per_student", b"min_group_size": b"5", b"retention_days": b"30"}
    assert Policy.from_redis(old) == Policy("per_student")
    assert Policy.from_redis({**old, b"attention": b"1"}) == Policy("per_student", attention=True)
    assert Policy.from_redis({**old, b"attention": b"yes"}) == Policy("per_student")


# --- the aggregator ----------------------------------------------------------------------------
def test_the_aggregator_folds_attention_once_and_publishes_it_in_every_mode(
    settings, clean_redis, roster, engine
):
    r, sid, ada, bo = clean_redis, roster["session"], roster["ada"], roster["bo"]
    mirror(r, Policy("off", attention=True))
    # Ada faces the screen for 2 s, then turns away for 3 s; Bo's orientation is not observed.
    ada_yaws = [0.0, 5.0, AWAY, AWAY, AWAY]
    results = [result(sid, ada, T0 + 100 + 1000 * i, y) for i, y in enumerate(ada_yaws)]
    results.append(result(sid, bo, T0 + 200, None))
    push(r, results)
    pubsub = r.pubsub()
    pubsub.subscribe(c.live_channel(sid))
    pubsub.get_message(timeout=1)
    run_aggregator(Aggregator(settings, r, engine))
    with Session(engine) as db:
        by = {str(b.student_id): b for b in db.scalars(select(EmotionBucket))}
        assert not list(db.scalars(select(ClassBucket)))  # off: no class bucket
    assert (by[ada].attention_frames, by[ada].facing_frames) == (5, 2)
    assert (by[bo].attention_frames, by[bo].facing_frames) == (0, 0)
    assert not by[ada].prob_sums  # off: the probabilities the result carried are not kept

    # Live, under "off": attention, and no estimate.
    latest = {m["student_id"]: m for m in live_messages(pubsub, 2)}
    assert latest[ada]["facing"] is False and latest[ada]["facing_share"] == 0.4
    assert latest[ada]["away_s"] == pytest.approx(3.0)  # since the last frame facing the screen
    assert latest[bo]["facing"] is None and latest[bo]["facing_share"] is None
    assert not any(views.carries_estimate(m) for m in latest.values())
    snapshot = r.hgetall(c.snapshot_key(sid))
    assert msgspec.json.decode(snapshot[ada.encode()])["facing_share"] == 0.4

    # Exactly once: the same results again change nothing.
    push(r, results)
    run_aggregator(Aggregator(settings, r, engine))
    with Session(engine) as db:
        again = db.get(EmotionBucket, (uuid.UUID(sid), uuid.UUID(ada), by[ada].bucket_start))
        assert again is not None and (again.attention_frames, again.facing_frames) == (5, 2)

    # aggregate_only with attention: the class bucket counts it too.
    mirror(r, Policy("aggregate_only", attention=True))
    push(r, [result(sid, ada, T0 + 10_100, 0.0), result(sid, bo, T0 + 10_200, AWAY)])
    run_aggregator(Aggregator(settings, r, engine))
    with Session(engine) as db:
        (klass,) = db.scalars(select(ClassBucket))
    assert (klass.frames_with_face, klass.attention_frames, klass.facing_frames) == (2, 2, 1)

    # The switch off: results still carrying an orientation (analysed just before) keep none.
    mirror(r, Policy("per_student", attention=False))
    push(r, [result(sid, ada, T0 + 15_100, 0.0)])
    run_aggregator(Aggregator(settings, r, engine))
    with Session(engine) as db:
        last = db.scalars(select(EmotionBucket).order_by(EmotionBucket.bucket_start.desc())).first()
    assert last is not None and (last.frames_with_face, last.attention_frames) == (1, 0)
    update = msgspec.json.decode(r.hget(c.snapshot_key(sid), ada))
    assert update["emotion"] and all(update[f] is None for f in c.ATTENTION_FIELDS)
    pubsub.close()


def test_the_share_covers_the_window_only_in_bounded_memory():
    state = AttentionState()
    update = c.LiveUpdate(type="student", session_id="s", student_id="u", t=0.0)
    for i in range(10):  # 10 s looking away
        state.fill(update, False, T0 + 1000 * i)
    assert update.facing_share == 0.0 and update.away_s == pytest.approx(9.0)
    edge = T0 + 1000 * (c.ATTENTION_WINDOW_S + 5)  # 5 s of them have left the window
    state.fill(update, True, edge)
    assert (update.facing, update.facing_share, update.away_s) == (True, 0.2, None)
    later = T0 + 1000 * (c.ATTENTION_WINDOW_S + 10)  # all of them have
    state.fill(update, True, later)
    assert (update.facing, update.facing_share, update.away_s) == (True, 1.0, None)
    assert (state.n, state.n_f) == (2, 2)
    state.fill(update, None, later + 1000)  # a frame without an observed face
    assert (update.facing, update.facing_share) == (None, 1.0)


# --- what leaves the service -------------------------------------------------------------------
def _reports(k: Any) -> dict[str, Any]:
    sid = k.session["id"]
    history = k.client.get(f"/api/sessions/{sid}/history", headers=k.teacher)
    assert history.status_code == 200, history.text
    text = k.client.get(f"/api/sessions/{sid}/report?format=csv", headers=k.teacher).text
    pdf = k.client.get(f"/api/sessions/{sid}/report?format=pdf", headers=k.teacher)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    params = {"format": "csv", "session": sid, "from": today, "to": today}
    export = k.client.get("/api/admin/reports", params=params, headers=k.admin)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert export.status_code == 200, export.text
    return {
        "history": history.json(),
        "csv": list(csv.DictReader(io.StringIO(text))),
        "csv_text": text,
        "export": list(csv.DictReader(io.StringIO(export.text))),
        "pages": len(re.findall(rb"/Type\s*/Page\b", pdf.content)),
    }


def _live(k: Any, student: dict[str, Any]) -> list[dict[str, Any]]:
    """A dashboard's snapshot, then what it gets of an update carrying an estimate and
    attention (as an aggregator that had not seen the policy yet would publish it)."""
    token = k.teacher["Authorization"].split()[1]
    path = f"/ws/sessions/{k.session['id']}/live"
    with k.client.websocket_connect(path, subprotocols=token_protocols(token)) as ws:
        snap = ws.receive_json()
        leaky = student_update(
            k.session,
            student,
            t=42.5,
            emotion="sad",
            confidence=0.9,
            probs={"sad": 0.9},
            faces=1,
            facing=False,
            facing_share=0.25,
            away_s=12.0,
        )
        r = redis.Redis.from_url(k.settings.redis_url or "")
        r.publish(c.live_channel(k.session["id"]), c.encoder.encode(leaky))
        while (msg := ws.receive_json()).get("t") != 42.5:
            pass
        r.close()
    return [snap, msg]


def test_exports_and_live_views_follow_the_switch_and_off_shows_no_emotion(
    settings, clean_redis, engine
):
    with a_class(settings) as k:
        ada = k.join("Ada")
        # Stored under the loosest policy: estimates and attention in the buckets.
        k.put_policy(emotion_mode="per_student", attention=True)
        sid, student = k.session["id"], ada["student_id"]
        yaws = [0.0, 0.0, 0.0, AWAY]
        push(clean_redis, [result(sid, student, T0 + 100 + 500 * i, y) for i, y in enumerate(yaws)])
        run_aggregator(Aggregator(settings, clean_redis, engine))

        # per_student + attention: both shown.
        on = _reports(k)
        (row,) = on["history"]["rows"]
        assert (row["attention_frames"], row["facing_frames"], row["facing_share"]) == (4, 3, 0.75)
        assert on["history"]["policy"]["attention"] is True
        assert on["history"]["summary"]["facing_share"] == 0.75
        assert {r["scope"]: r["facing_share"] for r in on["csv"]} == {
            "class": "0.75",
            "student": "0.75",
        }
        assert csv_estimates_in(on["csv_text"])  # the estimates too, as per_student allows

        # off + attention: attention everywhere, no emotion anywhere.
        k.put_policy(emotion_mode="off")
        off = _reports(k)
        assert not estimates_in(off["history"]) and not csv_estimates_in(off["csv_text"])
        assert all(not r[label] for r in off["csv"] + off["export"] for label in DEFAULT_LABELS)
        assert [r["facing_share"] for r in off["csv"]] == ["0.75", "0.75"]
        assert [r["facing_share"] for r in off["export"]] == ["0.75", "0.75"]
        assert off["pages"] == on["pages"]  # the per-student "Facing the screen" page stays
        path = f"/api/sessions/{sid}/history/students/{student}"
        drill = k.client.get(path, headers=k.teacher).json()
        assert drill["rows"][0]["facing_share"] == 0.75 and not estimates_in(drill)
        snap, msg = _live(k, ada)
        # Per-student data on a dashboard, if only attention: audited as a view of it.
        assert rows(settings, "SELECT count(*) FROM audit_log WHERE action = 'view.live'") == [(1,)]
        assert not estimates_in(snap) and not estimates_in(msg)
        assert msg["facing_share"] == 0.25 and msg["away_s"] == 12.0 and msg["emotion"] is None
        me = k.client.get("/api/student/me", headers={"Authorization": "Bearer " + ada["token"]})
        assert me.json()["facing_share"] == 0.75 and me.json()["probs"] is None

        # Attention off: none of it, in any form, whatever is stored.
        k.put_policy(emotion_mode="per_student", attention=False)
        gone = _reports(k)
        assert gone["history"]["rows"]  # the loop below checks something
        for r in gone["history"]["rows"]:
            assert all(r[f] is None for f in views.ATTENTION_STORED)
        assert gone["history"]["summary"]["facing_share"] is None
        assert not set(CSV_ATTENTION) & (set(gone["csv"][0]) | set(gone["export"][0]))
        assert gone["pages"] == on["pages"] - 1  # no "Facing the screen" page
        snap, msg = _live(k, ada)
        assert all(msg[f] is None for f in c.ATTENTION_FIELDS) and msg["emotion"] == "sad"
        me = k.client.get("/api/student/me", headers={"Authorization": "Bearer " + ada["token"]})
        assert me.json()["facing_share"] is None
        assert me.json()["buckets"]
        assert all(b["facing_share"] is None for b in me.json()["buckets"])
        k.put_policy(emotion_mode="off")
        assert k.client.get(path, headers=k.teacher).status_code == 403


def test_the_hub_withholds_attention_unless_the_policy_in_force_observes_it():
    policy = [Policy("off", attention=False)]
    hub = Hub(None, mode=lambda: policy[0])  # type: ignore[arg-type]  # dispatch only
    teacher, student = DropOldestQueue(8), DropOldestQueue(8)
    update = c.LiveUpdate(type="student", session_id="s", student_id="u", t=0.0, faces=1)
    looking = msgspec.structs.replace(update, facing=False, facing_share=0.0, away_s=4.0)
    data = c.encoder.encode(looking)
    assert not views.may_carry_attention(c.encoder.encode(update))  # no decoding needed
    with hub.subscribe("s", teacher), hub.subscribe("s", student, "u"):
        hub.dispatch(c.live_channel("s").encode(), data)
        for queue in (teacher, student):
            got = msgspec.json.decode(queue.get_nowait())
            assert got["faces"] == 1 and not views.carries_attention(got)
        policy[0] = Policy("off", attention=True)
        hub.dispatch(c.live_channel("s").encode(), data)
        assert teacher.get_nowait() is data and student.get_nowait() is data
    # A bare mode (no Policy) cannot say attention is on.
    assert not views.carries_attention(msgspec.json.decode(views.live_message(data, "off")))
