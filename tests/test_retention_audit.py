"""Retention (scheduled and by command), deletion on request, the audit log and its export."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from classpulse import contracts as c
from classpulse.cli import main as cli_main
from classpulse.db import make_engine
from records.retention import purge
from tests.gateway_helpers import token_protocols
from tests.privacy_helpers import a_class, rows, send_frames

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=31)  # past the default 30 days
RECENT = NOW - timedelta(days=29)


def seed(settings, session_id: str, student_id: str, when: datetime, tag: str) -> None:
    """One row of every retained kind at ``when``."""
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "INSERT INTO emotion_buckets (session_id, student_id, bucket_start, frames,"
            " frames_with_face, prob_sums, updated_at) VALUES (%s, %s, %s, 1, 1, '{}', now())",
            (session_id, student_id, when),
        )
        conn.execute(
            "INSERT INTO class_buckets (session_id, bucket_start, frames, frames_with_face,"
            " prob_sums) VALUES (%s, %s, 1, 1, '{\"happy\": 1}')",
            (session_id, when),
        )
        conn.execute(
            "INSERT INTO alerts (session_id, rule, message, started_at, ended_at)"
            " VALUES (%s, %s, 'look', %s, %s)",
            (session_id, tag, when, when + timedelta(minutes=5)),
        )
        conn.execute(
            "INSERT INTO consent_records (session_id, student_id, action, at)"
            " VALUES (%s, %s, 'accepted', %s)",
            (session_id, student_id, when),
        )
        conn.execute(
            "INSERT INTO audit_log (action, target_id, at) VALUES ('view.live', %s, %s)",
            (tag, when),
        )


def test_retention_deletes_what_is_past_the_period(settings, clean_redis, monkeypatch, capsys):
    with a_class(settings) as k:
        live = k.session["id"]
        ada = k.join("Ada")
        old_session = k.client.post(
            "/api/sessions", json={"title": "Old"}, headers=k.teacher
        ).json()
        bo = k.join("Bo")
    with psycopg.connect(settings.database_url) as conn:  # Bo's class ended long ago
        conn.execute(
            "UPDATE students SET session_id = %s WHERE id = %s",
            (old_session["id"], bo["student_id"]),
        )
        conn.execute(
            "UPDATE class_sessions SET ended_at = %s WHERE id = %s", (OLD, old_session["id"])
        )
        conn.execute("DELETE FROM consent_records")  # the joins' own records are of today
        conn.execute(
            "INSERT INTO applied_results (id, applied_at) VALUES ('1-0', %s), ('2-0', now())",
            (NOW - timedelta(days=2),),
        )
    seed(settings, live, ada["student_id"], OLD, "old")
    seed(settings, live, ada["student_id"], RECENT, "recent")

    engine = make_engine(settings.database_url)
    try:
        counts = purge(engine)
    finally:
        engine.dispose()
    assert counts == {
        "emotion_buckets": 1,
        "class_buckets": 1,
        "alerts": 1,
        "consent_records": 0,  # they go with their student, and Ada is still here
        "audit_log": 0,  # kept for CLASSPULSE_AUDIT_RETENTION_DAYS (365), not the data's 30
        "students": 1,
        "applied_results": 1,
    }
    assert rows(settings, "SELECT bucket_start FROM emotion_buckets") == [(RECENT,)]
    assert rows(settings, "SELECT bucket_start FROM class_buckets") == [(RECENT,)]
    assert rows(settings, "SELECT rule FROM alerts") == [("recent",)]
    assert rows(settings, "SELECT at FROM consent_records ORDER BY at") == [(OLD,), (RECENT,)]
    assert rows(settings, "SELECT target_id FROM audit_log ORDER BY target_id") == [
        ("old",),
        ("recent",),
    ]
    assert rows(settings, "SELECT display_name FROM students") == [("Ada",)]
    assert rows(settings, "SELECT id FROM applied_results") == [("2-0",)]

    # A shorter period set by the admin applies to the next run: the command runs it once.
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("UPDATE org_policy SET retention_days = 7")
        if not conn.execute("SELECT 1 FROM org_policy").fetchone():
            conn.execute("INSERT INTO org_policy (id, retention_days) VALUES (1, 7)")
    monkeypatch.setenv("CLASSPULSE_DATABASE_URL", settings.database_url)
    assert cli_main(["retention"]) == 0
    assert "emotion_buckets: 1 deleted" in capsys.readouterr().out
    assert rows(settings, "SELECT count(*) FROM emotion_buckets") == [(0,)]


def test_admin_deletes_a_students_data_on_request(settings, clean_redis):
    with a_class(settings) as k:
        ada, bo = k.join("Ada"), k.join("Bo")
        seed(settings, k.session["id"], ada["student_id"], RECENT, "ada")
        clean_redis.hset(c.snapshot_key(k.session["id"]), ada["student_id"], b"{}")
        path = f"/api/admin/students/{ada['student_id']}"
        assert k.client.delete(path, headers=k.teacher).status_code == 403
        r = k.client.delete(path, headers=k.admin)
        assert r.status_code == 200, r.text
        assert r.json()["deleted"] == {"emotion_buckets": 1, "consent_records": 2, "alerts": 0}
        assert k.client.delete(path, headers=k.admin).status_code == 404
        assert (
            k.client.delete(f"/api/admin/students/{uuid.uuid4()}", headers=k.admin).status_code
            == 404
        )
        assert not clean_redis.hexists(c.snapshot_key(k.session["id"]), ada["student_id"])
        # Flagged as withdrawn: her frames and results still in flight are neither analysed
        # nor shown (the aggregator shows results before it stores them).
        assert clean_redis.get(c.withdrawn_key(ada["student_id"])) == k.session["id"].encode()
        assert clean_redis.get(c.withdrawn_key(bo["student_id"])) is None
        # Her page's token no longer finds anything.
        me = k.client.get("/api/student/me", headers={"Authorization": "Bearer " + ada["token"]})
        assert me.status_code == 404
    assert rows(settings, "SELECT display_name FROM students") == [("Bo",)]
    assert rows(settings, "SELECT count(*) FROM emotion_buckets") == [(0,)]
    assert rows(settings, "SELECT student_id::text FROM consent_records") == [(bo["student_id"],)]
    ((action, target, detail),) = rows(
        settings, "SELECT action, target_id, detail FROM audit_log WHERE action LIKE 'delete.%%'"
    )
    assert (action, target) == ("delete.student", ada["student_id"])
    assert detail["session_id"] == k.session["id"] and detail["emotion_buckets"] == 1


def test_admin_deletes_a_sessions_data_on_request(settings, clean_redis):
    with a_class(settings) as k:
        ada = k.join("Ada")
        seed(settings, k.session["id"], ada["student_id"], RECENT, "x")
        path = f"/api/admin/sessions/{k.session['id']}/data"
        assert k.client.delete(path, headers=k.teacher).status_code == 403
        r = k.client.delete(path, headers=k.admin)
        assert r.status_code == 200, r.text
        assert r.json()["deleted"] == {
            "students": 1,
            "emotion_buckets": 1,
            "class_buckets": 1,
            "consent_records": 2,
            "alerts": 1,
        }
        session = k.client.get(f"/api/sessions/{k.session['id']}", headers=k.teacher).json()
        assert session["student_count"] == 0 and session["ended_at"] is not None
        assert not clean_redis.exists(c.presence_key(k.session["id"]))
    for table in ("students", "emotion_buckets", "class_buckets", "consent_records", "alerts"):
        assert rows(settings, f"SELECT count(*) FROM {table}") == [(0,)], table
    assert rows(
        settings, "SELECT action, target_id FROM audit_log WHERE action LIKE 'delete.%%'"
    ) == [("delete.session_data", k.session["id"])]


def test_audit_log_reads_filters_pages_and_exports(settings, clean_redis):
    with a_class(settings) as k:
        ada = k.join("Ada")
        send_frames(k.client, ada["token"])
        token = k.teacher["Authorization"].split()[1]
        for _ in range(3):  # three views of per-student data
            with k.client.websocket_connect(
                f"/ws/sessions/{k.session['id']}/live", subprotocols=token_protocols(token)
            ) as ws:
                ws.receive_json()
        k.client.get(
            f"/api/sessions/{k.session['id']}/history/students/{ada['student_id']}",
            headers=k.teacher,
        )
        k.put_policy(min_group_size=4)
        with psycopg.connect(settings.database_url) as conn:  # an actor that looks like a formula
            conn.execute(
                "INSERT INTO audit_log (action, actor_email) VALUES ('view.live', '=cmd()')"
            )

        assert k.client.get("/api/admin/audit", headers=k.teacher).status_code == 403
        page = k.client.get("/api/admin/audit", headers=k.admin).json()
        actions = [e["action"] for e in page["entries"]]
        assert actions == ["view.live", "policy.update", "view.history", *["view.live"] * 3]
        live = page["entries"][-1]
        assert live["actor_email"] == "t@school.example" and live["target_type"] == "session"
        assert live["target_id"] == k.session["id"] and live["ip"]

        got = k.client.get("/api/admin/audit?action=view.*&limit=2", headers=k.admin).json()
        assert [e["action"] for e in got["entries"]] == ["view.live", "view.history"]
        more = k.client.get(
            f"/api/admin/audit?action=view.*&limit=2&before_id={got['next_before_id']}",
            headers=k.admin,
        ).json()
        assert [e["action"] for e in more["entries"]] == ["view.live", "view.live"]
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        future = k.client.get("/api/admin/audit", params={"from": later}, headers=k.admin).json()
        assert future == {"entries": [], "next_before_id": None}
        r = k.client.get("/api/admin/audit?limit=5000", headers=k.admin)
        assert r.status_code == 422 and "before_id" in r.json()["detail"]

        r = k.client.get("/api/admin/audit?format=csv&action=view.live", headers=k.admin)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert "attachment" in r.headers["content-disposition"]
        table = list(csv.DictReader(io.StringIO(r.text)))
        assert len(table) == 4 and {row["action"] for row in table} == {"view.live"}
        assert table[0]["actor_email"] == "'=cmd()"  # no formula in a spreadsheet
        assert json.loads(table[-1]["detail"]) == {}
    ((detail,),) = rows(settings, "SELECT detail FROM audit_log WHERE action = 'export.audit'")
    assert detail["rows"] == 4 and detail["action"] == "view.live"


@pytest.mark.parametrize("path", ["/api/admin/policy", "/api/admin/audit"])
def test_admin_endpoints_need_an_admin(settings, clean_redis, path):
    with a_class(settings) as k:
        assert k.client.get(path).status_code == 401
        assert k.client.get(path, headers=k.teacher).status_code == 403
        assert k.client.get(path, headers=k.admin).status_code == 200
