"""The join flow: consent first, nothing stored without it; ended sessions are gone (404, as
unknown codes)."""

from __future__ import annotations

import json

import jwt
import psycopg

from app.consent import CONSENT_VERSION
from classpulse import contracts
from tests.gateway_helpers import bearer, client_for, join, make_user, new_session


def _student_rows(settings) -> int:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute("SELECT count(*) FROM students").fetchone()[0]


def test_join_info_and_join(settings):
    teacher = make_user(settings, "ms.k@school.example")
    with client_for(settings) as client:
        s = new_session(client, bearer(settings, teacher), "Biology")
        info = client.get(f"/api/join/{s['join_code']}").json()
        assert info["session_title"] == "Biology" and info["teacher"] == "ms.k"
        assert info["consent_version"] == CONSENT_VERSION
        assert "Article 5(1)(f)" in info["consent_text"] and "never" in info["consent_text"]

        body = {"display_name": "Ada", "consent": True, "consent_version": CONSENT_VERSION}
        r = client.post(f"/api/join/{s['join_code']}", json=body)
        assert r.status_code == 201, r.text
        out = r.json()
        assert out["session_id"] == s["id"] and out["session_title"] == "Biology"
        assert out["ws_url"] == "/ws/student" and out["expires_in"] == settings.student_token_ttl_s
        claims = jwt.decode(out["token"], settings.secret_key, algorithms=["HS256"])
        assert (
            claims["typ"] == "student"
            and claims["sub"] == out["student_id"]
            and claims["sid"] == s["id"]
        )


def test_no_consent_no_student(settings):
    teacher = make_user(settings, "t@school.example")
    with client_for(settings) as client:
        code = new_session(client, bearer(settings, teacher))["join_code"]
        # No answer to the consent notice: no join. (Declining is an answer: tests/test_consent.py.)
        r = client.post(f"/api/join/{code}", json={"display_name": "Ada"})
        assert r.status_code == 400 and r.json()["detail"].startswith("consent is required")
        r = client.post(
            f"/api/join/{code}",
            json={"display_name": "Ada", "consent": True, "consent_version": "old"},
        )
        assert r.status_code == 409 and "changed" in r.json()["detail"]
        for name in ("   ", "x" * 81):
            r = client.post(f"/api/join/{code}", json={"display_name": name, "consent": True})
            assert r.status_code == 400 and "display_name" in r.json()["detail"]
        assert client.post(f"/api/join/{code}", json={"consent": True}).status_code == 422
        assert _student_rows(settings) == 0


def test_unknown_and_ended_codes_are_answered_alike(settings):
    """No oracle: a code that never existed and one whose class ended get the same answer, on the
    lookup and on the join, so guessing codes tells nothing about which were used."""
    teacher = make_user(settings, "t@school.example")
    with client_for(settings) as client:
        headers = bearer(settings, teacher)
        s = new_session(client, headers)
        unknown = client.get("/api/join/ABCDEFGH")
        client.post(f"/api/sessions/{s['id']}/end", headers=headers)
        ended = client.get(f"/api/join/{s['join_code']}")
        assert unknown.status_code == ended.status_code == 404
        assert unknown.json() == ended.json()
        assert "ended" in ended.json()["detail"]  # the page's text covers both cases
        body = {"display_name": "A", "consent": True}
        posts = [client.post(f"/api/join/{c}", json=body) for c in ("ABCDEFGH", s["join_code"])]
        assert [r.status_code for r in posts] == [404, 404]
        assert posts[0].json() == posts[1].json() == unknown.json()
        assert _student_rows(settings) == 0


def test_withdraw(settings, clean_redis):
    teacher = make_user(settings, "t@school.example")
    with client_for(settings) as client:
        headers = bearer(settings, teacher)
        s = new_session(client, headers)
        student = join(client, s["join_code"], "Ada")
        r = client.post(
            "/api/student/withdraw", headers={"Authorization": "Bearer " + student["token"]}
        )
        assert r.status_code == 204
        roster = client.get(f"/api/sessions/{s['id']}/students", headers=headers).json()
        assert roster[0]["withdrawn_at"] is not None
        presence = json.loads(
            clean_redis.hget(contracts.presence_key(s["id"]), student["student_id"])
        )
        assert presence["type"] == "presence" and presence["presence"] == "withdrawn"
        assert presence["display_name"] == "Ada"
