"""Sessions belong to their teacher: others get 404 (existence is not leaked); admins see all."""

from __future__ import annotations

import re
import uuid

from tests.gateway_helpers import bearer, client_for, join, make_user, new_session


def test_create_and_list(settings):
    settings = settings.model_copy(update={"public_url": "https://pulse.school.example/"})
    teacher = make_user(settings, "t@school.example")
    with client_for(settings) as client:
        s = new_session(client, bearer(settings, teacher), "  Physics  ")
        assert s["title"] == "Physics" and s["owner_id"] == teacher and s["ended_at"] is None
        assert re.fullmatch(r"[A-HJ-NP-Z2-9]{8}", s["join_code"])
        assert s["join_url"] == "https://pulse.school.example/join/" + s["join_code"]
        assert s["student_count"] == 0
        join(client, s["join_code"].lower())  # codes are typed by hand: case doesn't matter
        listed = client.get("/api/sessions", headers=bearer(settings, teacher)).json()
        assert [x["id"] for x in listed] == [s["id"]] and listed[0]["student_count"] == 1
        r = client.post("/api/sessions", json={"title": ""}, headers=bearer(settings, teacher))
        assert r.status_code == 422 and r.json()["detail"].startswith("body.title:")


def test_list_counts_each_sessions_students_and_is_bounded(settings):
    teacher = make_user(settings, "t@school.example")
    with client_for(settings) as client:
        auth = bearer(settings, teacher)
        made = [new_session(client, auth, f"Class {i}") for i in range(3)]
        for i, s in enumerate(made):
            for _ in range(i):
                join(client, s["join_code"])
        listed = client.get("/api/sessions", headers=auth).json()
        assert [x["id"] for x in listed] == [s["id"] for s in reversed(made)]  # newest first
        assert [x["student_count"] for x in listed] == [2, 1, 0]
        newest = client.get("/api/sessions?limit=2", headers=auth).json()
        assert [x["id"] for x in newest] == [made[2]["id"], made[1]["id"]]
        r = client.get("/api/sessions?limit=0", headers=auth)
        assert r.status_code == 422


def test_join_url_defaults_to_request_base(settings):
    teacher = make_user(settings, "t@school.example")
    with client_for(settings) as client:
        s = new_session(client, bearer(settings, teacher))
        assert s["join_url"] == "http://testserver/join/" + s["join_code"]


def test_teacher_cannot_touch_another_teachers_session(settings):
    a = make_user(settings, "a@school.example")
    b = make_user(settings, "b@school.example")
    admin = make_user(settings, "admin@school.example", "admin")
    with client_for(settings) as client:
        s = new_session(client, bearer(settings, a))
        as_b = bearer(settings, b)
        for method, suffix in [
            ("GET", ""),
            ("POST", "/end"),
            ("GET", "/students"),
            ("GET", "/history"),
        ]:
            for sid in (s["id"], str(uuid.uuid4()), "not-a-uuid"):
                r = client.request(method, f"/api/sessions/{sid}{suffix}", headers=as_b)
                assert r.status_code == 404 and r.json()["detail"] == "session not found", (
                    method,
                    suffix,
                )
        assert client.get("/api/sessions", headers=as_b).json() == []
        assert client.get("/api/sessions?all=1", headers=as_b).json() == []  # only admins see all

        as_admin = bearer(settings, admin, "admin")
        assert client.get(f"/api/sessions/{s['id']}", headers=as_admin).status_code == 200
        assert client.get("/api/sessions", headers=as_admin).json() == []
        assert [x["id"] for x in client.get("/api/sessions?all=1", headers=as_admin).json()] == [
            s["id"]
        ]
        assert (
            client.get(f"/api/sessions/{s['id']}", headers=bearer(settings, a)).json()["ended_at"]
            is None
        )


def test_end_and_roster(settings, clean_redis):
    teacher = make_user(settings, "t@school.example")
    with client_for(settings) as client:
        headers = bearer(settings, teacher)
        s = new_session(client, headers)
        ada = join(client, s["join_code"], "  Ada   Lovelace ")
        join(client, s["join_code"], "Bob")
        roster = client.get(f"/api/sessions/{s['id']}/students", headers=headers).json()
        assert [r["display_name"] for r in roster] == ["Ada Lovelace", "Bob"]
        assert roster[0]["id"] == ada["student_id"] and roster[0]["withdrawn_at"] is None

        ended = client.post(f"/api/sessions/{s['id']}/end", headers=headers).json()
        assert ended["ended_at"] is not None
        again = client.post(f"/api/sessions/{s['id']}/end", headers=headers).json()
        assert again["ended_at"] == ended["ended_at"]  # ending twice keeps the first time
        assert (
            client.post(
                f"/api/join/{s['join_code']}", json={"display_name": "Cy", "consent": True}
            ).status_code
            == 404  # as an unknown code: no oracle (tests/test_api_join.py)
        )
