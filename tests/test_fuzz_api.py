"""Schemathesis over every operation of /openapi.json against the running gateway (real
PostgreSQL and Redis), as admin, teacher, student and anonymous: no 5xx, no response that
contradicts its documented schema. The harness is tests/fuzz_harness.py; bench/fuzz_api.py runs
it longer. Below it, one regression test per failure the fuzzer found and the fix it pinned."""

from __future__ import annotations

from datetime import date

import pytest

from records import reports
from tests.fuzz_harness import IDENTITIES, fuzzer
from tests.gateway_helpers import bearer, client_for, make_user

# CI tier: about 20-30 s an identity here. Derandomized, so a failure reproduces on every run.
EXAMPLES = 12


@pytest.mark.slow
@pytest.mark.parametrize("identity", IDENTITIES)
def test_fuzz_every_operation(settings, identity):
    with fuzzer(settings, examples=EXAMPLES, seconds=240) as f:
        figures = f.run((identity,))
        operations = len(f.operations())
    print(figures.summary())
    assert len(figures.operations) == operations, "every operation was fuzzed"
    assert not figures.findings, figures.summary() + "\n\n" + figures.report()


# --- regressions: each failed with a 500 before its fix ---------------------------------------
@pytest.mark.parametrize("title", ["\x00", "Maths\x00", "a\x00b", "Maths\x07"])
def test_session_title_with_a_control_character_is_refused(settings, title):
    """PostgreSQL refuses U+0000 in text: the insert raised DataError (500)."""
    teacher = make_user(settings, "t@school.example")
    with client_for(settings) as client:
        r = client.post("/api/sessions", json={"title": title}, headers=bearer(settings, teacher))
        assert r.status_code == 422, r.text
        assert r.json()["detail"].startswith("body.title:") and "control character" in r.text


@pytest.mark.parametrize(
    "body",
    [
        {"email": "\x00", "password": "correct horse battery"},  # the duplicate check's SELECT
        {"email": "nul\x00@school.example", "password": "correct horse battery"},
        {
            "email": "new@school.example",
            "password": "correct horse battery",
            "display_name": "\x00",
        },
    ],
)
def test_account_with_a_control_character_is_refused(settings, body):
    admin = make_user(settings, "admin@school.example", "admin")
    with client_for(settings) as client:
        r = client.post("/api/admin/users", json=body, headers=bearer(settings, admin, "admin"))
        assert r.status_code == 422, r.text
        assert "control character" in r.json()["detail"]
        # A password is hashed, never stored as text: a NUL in it is the user's business.
        ok = {"email": "ok@school.example", "password": "correct\x00horse battery"}
        r = client.post("/api/admin/users", json=ok, headers=bearer(settings, admin, "admin"))
        assert r.status_code == 201, r.text


def test_export_up_to_the_last_day_of_the_calendar(settings):
    """'to=9999-12-31' had no next day to stop at: OverflowError (500)."""
    lo, hi = reports.day_range(date(9999, 12, 30), date.max)
    assert lo.year == 9999 and hi.year == 9999 and hi > lo
    admin = make_user(settings, "admin@school.example", "admin")
    with client_for(settings) as client:
        for fmt in ("json", "csv"):
            r = client.get(
                "/api/admin/reports",
                params={"from": "9999-12-31", "to": "9999-12-31", "format": fmt},
                headers=bearer(settings, admin, "admin"),
            )
            assert r.status_code == 200, r.text
            if fmt == "json":
                assert r.json()["sessions"] == []
            else:
                assert len(r.text.splitlines()) == 1  # the header: no session that far ahead


def test_openapi_documents_the_media_types_sent(settings):
    """content_type_conformance: CSV/PDF reports and Prometheus metrics were documented as JSON."""
    from app.main import create_app

    paths = create_app(settings).openapi()["paths"]

    def media(path: str) -> set[str]:
        return set(paths[path]["get"]["responses"]["200"]["content"])

    assert media("/api/sessions/{session_id}/report") == {
        "application/json",
        "text/csv",
        "application/pdf",
    }
    assert media("/api/admin/reports") == {"application/json", "text/csv", "application/pdf"}
    assert media("/metrics") == {"text/plain"}


def test_hostile_values_get_4xx_not_5xx(settings):
    """The four causes the fuzzer found in the gateway's shared pieces, pinned."""
    admin = bearer(settings, make_user(settings, "a@school.example", "admin"), "admin")
    with client_for(settings) as client:
        # A NUL in a join code never reaches PostgreSQL.
        assert client.get("/api/join/%00").status_code == 404
        body = {"display_name": "Cy", "consent": True}
        assert client.post("/api/join/AB%00CD", json=body).status_code == 404
        # ...nor in a login email.
        login = {"email": "nul\x00@school.example", "password": "correct horse battery"}
        assert client.post("/api/auth/login", json=login).status_code == 401
        # Audit filters are bounded and plain.
        assert client.get("/api/admin/audit?action=%00", headers=admin).status_code == 422
        r = client.get("/api/admin/audit?before_id=9223372036854775808", headers=admin)
        assert r.status_code == 422
        # Every 422 is the documented {"detail": "<one line>"}.
        r = client.get("/api/sessions?limit=0", headers=admin)
        assert r.status_code == 422 and isinstance(r.json()["detail"], str)
        schema = client.get("/openapi.json").json()["components"]["schemas"]["ErrorOut"]
        assert schema["properties"]["detail"]["type"] == "string"
