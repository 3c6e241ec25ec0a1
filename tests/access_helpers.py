"""Helpers shared by test modules, moved out of tests/test_access_matrix.py: no test module
imports another (tests/test_layering.py)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocketDisconnect

from app.routes.edge_files import ORT_WASM_URL
from classpulse.settings import Settings
from tests.gateway_helpers import (
    PASSWORD,
    bearer,
    join,
    make_user,
    new_session,
    token_protocols,
)

# --- who calls ----------------------------------------------------------------------------------
ANON = "anonymous"
STUDENT_A = "student of A"
STUDENT_B = "student of B"
TEACHER_A = "teacher of A"
TEACHER_B = "other teacher"
ADMIN = "admin"


# The sessions each caller may see the data of (the matrix's path parameters are A's).
VISIBLE = {
    ANON: set(),
    STUDENT_A: {"A"},
    STUDENT_B: {"B"},
    TEACHER_A: {"A"},
    TEACHER_B: {"B"},
    ADMIN: {"A", "B"},
}


@dataclass
class World:
    """Two teachers with a session each, a student joined to each, and an admin."""

    user_ids: dict[str, int]
    emails: dict[str, str]
    headers: dict[str, dict[str, str]]  # per identity
    tokens: dict[str, str | None]  # per identity, for the WebSockets
    sessions: dict[str, dict[str, Any]]  # "A", "B" -> SessionOut
    students: dict[str, dict[str, Any]]  # "A", "B" -> JoinOut
    names: dict[str, str]  # "A", "B" -> the student's display name

    @property
    def a(self) -> dict[str, Any]:
        return self.sessions["A"]

    def secrets(self, which: str) -> dict[str, str]:
        s, st = self.sessions[which], self.students[which]
        return {
            f"{which}.id": s["id"],
            f"{which}.title": s["title"],
            f"{which}.join_code": s["join_code"],
            f"{which}.student_id": st["student_id"],
            f"{which}.student_name": self.names[which],
        }

    def path_values(self) -> dict[str, str]:
        return {
            "session_id": self.a["id"],
            "student_id": self.students["A"]["student_id"],
            "code": self.a["join_code"],
            "user_id": str(self.user_ids[TEACHER_A]),
        }


Value = Any  # a value, or a function of the World that gives it


@dataclass(frozen=True)
class Call:
    """How to call one route, and what it answers when the caller is allowed."""

    rule: str
    ok: int | str  # HTTP: the exact success status; WebSocket: the first message's type
    json: Value = None
    params: Value = None
    path: str | None = None  # a concrete path where the template isn't one (a mount)
    fresh: bool = False  # changes state others would see: a world of its own per caller
    grants_a: bool = False  # the join code in the path is the capability to A's title and id
    check: Callable[[World, str, Any], str | None] | None = None  # more about an allowed answer


def _today(w: World) -> dict[str, str]:
    day = datetime.now(UTC).date().isoformat()
    return {"from": day, "to": day}


# --- checks of allowed answers: the caller's own data, never another's ------------------------
def _listed_sessions(w: World, who: str, body: Any) -> str | None:
    mine = {k for k, s in w.sessions.items() if s["id"] in {x["id"] for x in body}}
    return None if mine == VISIBLE[who] else f"lists sessions {sorted(mine)}"


def _me(w: World, who: str, body: Any) -> str | None:
    return None if body["id"] == w.user_ids[who] else f"is account {body['id']}"


def _student_me(w: World, who: str, body: Any) -> str | None:
    own = "A" if who == STUDENT_A else "B"
    expected = (w.students[own]["student_id"], w.sessions[own]["title"])
    got = (body["student_id"], body["session_title"])
    return None if got == expected else f"describes {got}, not {expected}"


def _session_a(w: World, who: str, body: Any) -> str | None:
    return None if body["id"] == w.a["id"] else f"is session {body['id']}"


def _roster_a(w: World, who: str, body: Any) -> str | None:
    ids = {s["id"] for s in body}
    return None if w.students["A"]["student_id"] in ids else "misses A's student"


def _snapshot_a(w: World, who: str, msg: Any) -> str | None:
    ids = {s["student_id"] for s in msg["students"]}
    if msg["session_id"] != w.a["id"] or w.students["A"]["student_id"] not in ids:
        return f"snapshot of {msg['session_id']} with {sorted(ids)}"
    return None


# --- the matrix: one row per (method, path template) the app serves ----------------------------
ACCESS: dict[tuple[str, str], Call] = {
    # Framework and files
    ("GET", "/openapi.json"): Call("public", 200),
    ("GET", "/docs"): Call("public", 200),
    ("GET", "/docs/oauth2-redirect"): Call("public", 200),
    ("GET", "/static"): Call("public", 200, path="/static/favicon.svg"),
    # Health
    ("GET", "/healthz"): Call("public", 200),
    ("GET", "/readyz"): Call("public", 200),
    ("GET", "/metrics"): Call("public", 200),
    # Pages: HTML shells, the data comes through the API
    ("GET", "/"): Call("public", 303),
    ("GET", "/login"): Call("public", 200),
    ("GET", "/sessions"): Call("public", 200),
    ("GET", "/sessions/{session_id}"): Call("public", 200),
    ("GET", "/sessions/{session_id}/history"): Call("public", 200),
    ("GET", "/join/{code}"): Call("public", 200),
    ("GET", "/privacy"): Call("public", 200),
    ("GET", "/account"): Call("public", 200),
    ("GET", "/set-password"): Call("public", 200),
    ("GET", "/admin"): Call("public", 303),
    ("GET", "/admin/people"): Call("public", 200),
    ("GET", "/admin/policy"): Call("public", 200),
    ("GET", "/admin/reports"): Call("public", 200),
    ("GET", "/admin/audit"): Call("public", 200),
    ("GET", "/admin/erasure"): Call("public", 200),
    ("GET", "/admin/status"): Call("public", 200),
    ("GET", "/qr.svg"): Call(
        "public", 200, params=lambda w: {"data": f"http://testserver/join/{w.a['join_code']}"}
    ),
    # Edge capture: the detectors, their contracts and the wasm runtime the student page runs
    ("GET", ORT_WASM_URL): Call("public", 200),
    ("GET", "/models/{name}.onnx"): Call(
        "public", 200, path="/models/face_detection_short_range.onnx"
    ),
    ("GET", "/models/{name}.json"): Call(
        "public", 200, path="/models/face_detection_short_range.json"
    ),
    # Accounts
    ("POST", "/api/auth/login"): Call(
        "public", 200, json=lambda w: {"email": w.emails[TEACHER_A], "password": PASSWORD}
    ),
    ("POST", "/api/auth/logout"): Call("public", 204, fresh=True),
    ("POST", "/api/auth/password"): Call(
        "any_user",
        200,
        json={"current_password": PASSWORD, "new_password": "a brand new passphrase"},
        fresh=True,
    ),
    ("GET", "/api/auth/me"): Call("any_user", 200, check=_me),
    ("PATCH", "/api/auth/me"): Call("any_user", 200, json={"display_name": "Ms Example"}),
    # The one-time link is the credential: whoever calls, a wrong token is refused alike.
    ("POST", "/api/auth/set-password"): Call(
        "public", 400, json={"token": "not-a-link", "new_password": "a brand new passphrase"}
    ),
    # Sessions
    ("POST", "/api/sessions"): Call("any_user", 201, json={"title": "Another class"}),
    ("GET", "/api/sessions"): Call("any_user", 200, params={"all": 1}, check=_listed_sessions),
    ("GET", "/api/sessions/{session_id}"): Call("teacher_session", 200, check=_session_a),
    ("POST", "/api/sessions/{session_id}/end"): Call("teacher_session", 200, fresh=True),
    ("GET", "/api/sessions/{session_id}/students"): Call("teacher_session", 200, check=_roster_a),
    ("GET", "/api/sessions/{session_id}/stream-stats"): Call("teacher_session", 200),
    ("GET", "/api/sessions/{session_id}/history"): Call("teacher_session", 200),
    ("GET", "/api/sessions/{session_id}/history/students/{student_id}"): Call(
        "teacher_session", 200
    ),
    ("GET", "/api/sessions/{session_id}/report"): Call("teacher_session", 200),
    ("GET", "/api/sessions/{session_id}/alerts"): Call("teacher_session", 200),
    ("GET", "/api/sessions/{session_id}/alert-rules"): Call("teacher_session", 200),
    ("PUT", "/api/sessions/{session_id}/alert-rules"): Call(
        "teacher_session", 200, json={"negative_share": {"threshold": 0.5}}
    ),
    ("WS", "/ws/sessions/{session_id}/live"): Call(
        "ws_teacher_session", "snapshot", check=_snapshot_a
    ),
    # Joining, and the student's own calls
    ("GET", "/api/join/{code}"): Call("public", 200, grants_a=True),
    ("POST", "/api/join/{code}"): Call(
        "public", 201, json={"display_name": "Newcomer", "consent": True}, grants_a=True
    ),
    ("GET", "/api/student/me"): Call("student_only", 200, check=_student_me),
    ("POST", "/api/student/withdraw"): Call("student_only", 204, fresh=True),
    ("WS", "/ws/student"): Call("ws_student", "config"),
    # Administration
    ("GET", "/api/admin/users"): Call("admin_only", 200),
    ("POST", "/api/admin/users"): Call(
        "admin_only",
        201,
        json=lambda w: {
            "email": f"new-{uuid.uuid4().hex[:8]}@school.example",
            "password": "a long enough password",
        },
    ),
    ("PATCH", "/api/admin/users/{user_id}"): Call(
        "admin_only", 200, json={"active": False}, fresh=True
    ),
    # A link takes over the account: the acting admin's own password again (a wrong one: 403,
    # test_refusals_of_the_security_pass below).
    ("POST", "/api/admin/users/{user_id}/password-link"): Call(
        "admin_only", 201, json={"current_password": PASSWORD}
    ),
    ("GET", "/api/admin/students"): Call("admin_only", 200),
    ("GET", "/api/admin/sessions/{session_id}/data"): Call("admin_only", 200),
    ("GET", "/api/admin/status"): Call("admin_only", 200),
    ("GET", "/api/admin/policy"): Call("admin_only", 200),
    # The default mode again: per-student history (above) needs it, and nothing else changes.
    ("PUT", "/api/admin/policy"): Call("admin_only", 200, json={"emotion_mode": "per_student"}),
    ("GET", "/api/admin/audit"): Call("admin_only", 200),
    ("GET", "/api/admin/reports"): Call("admin_only", 200, params=_today),
    ("DELETE", "/api/admin/students/{student_id}"): Call("admin_only", 200, fresh=True),
    ("DELETE", "/api/admin/sessions/{session_id}/data"): Call("admin_only", 200, fresh=True),
}


# --- the app's routes ---------------------------------------------------------------------------
def route_keys(app: Any) -> dict[tuple[str, str], Any]:
    """(method, path template) -> route, for every route of the app: "WS" for WebSockets, "GET"
    for mounts (static files); HEAD is left out where GET is there."""
    keys: dict[tuple[str, str], Any] = {}
    for route in all_routes(app):
        if isinstance(route, APIWebSocketRoute | WebSocketRoute):
            keys[("WS", route.path)] = route
        elif isinstance(route, Mount):
            keys[("GET", route.path)] = route
        elif isinstance(route, APIRoute | Route):
            methods = set(route.methods or ())
            if "GET" in methods:
                methods.discard("HEAD")
            for method in methods:
                keys[(method, route.path)] = route
        else:
            keys[("?", route.path)] = route  # a kind of route the matrix can't call: a row fails
    return keys


# --- building worlds and calling ----------------------------------------------------------------
def build_world(client: Any, settings: Settings) -> World:
    tag = uuid.uuid4().hex[:10]
    emails = {
        TEACHER_A: f"a-{tag}@school.example",
        TEACHER_B: f"b-{tag}@school.example",
        ADMIN: f"admin-{tag}@school.example",
    }
    roles = {TEACHER_A: "teacher", TEACHER_B: "teacher", ADMIN: "admin"}
    user_ids = {who: make_user(settings, email, roles[who]) for who, email in emails.items()}
    headers = {who: bearer(settings, uid, roles[who]) for who, uid in user_ids.items()}
    sessions = {
        "A": new_session(client, headers[TEACHER_A], f"Algebra {tag}"),
        "B": new_session(client, headers[TEACHER_B], f"Biology {tag}"),
    }
    names = {"A": f"Ada {tag}", "B": f"Bo {tag}"}
    students = {k: join(client, sessions[k]["join_code"], names[k]) for k in ("A", "B")}
    headers[ANON] = {}
    headers[STUDENT_A] = {"Authorization": "Bearer " + students["A"]["token"]}
    headers[STUDENT_B] = {"Authorization": "Bearer " + students["B"]["token"]}
    tokens = {who: (h["Authorization"].split()[1] if h else None) for who, h in headers.items()}
    return World(user_ids, emails, headers, tokens, sessions, students, names)


def _value(v: Value, w: World) -> Any:
    return v(w) if callable(v) else v


def concrete_path(template: str, call: Call, w: World) -> str:
    if call.path:
        return call.path
    values = w.path_values()

    def fill(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in values:
            raise AssertionError(
                f"{template}: no value for path parameter {{{name}}}; add one to"
                " World.path_values in tests/access_helpers.py"
            )
        return values[name]

    return re.sub(r"\{(\w+)(?::\w+)?\}", fill, template)


@dataclass
class Outcome:
    code: int | str  # HTTP status, or the close code / first message type of a WebSocket
    text: str
    body: Any = None
    detail: str = ""


def call_route(client: Any, method: str, path: str, call: Call, who: str, w: World) -> Outcome:
    client.cookies.clear()  # the login sets the cookie: no caller may inherit another's
    if method == "WS":
        token = w.tokens[who]
        kwargs = {"subprotocols": token_protocols(token)} if token else {}
        try:
            with client.websocket_connect(path, **kwargs) as ws:
                msg = ws.receive_json()
        except WebSocketDisconnect as exc:
            return Outcome(exc.code, str(exc.reason or ""), detail=str(exc.reason or ""))
        return Outcome(msg.get("type", "?"), str(msg), msg)
    r = client.request(
        method,
        path,
        headers=w.headers[who],
        json=_value(call.json, w),
        params=_value(call.params, w),
        follow_redirects=False,
    )
    client.cookies.clear()
    body: Any = None
    if r.content and r.headers.get("content-type", "").startswith("application/json"):
        body = r.json()
    detail = body.get("detail", "") if isinstance(body, dict) else ""
    return Outcome(r.status_code, r.text, body, str(detail))


def all_routes(app):
    """Every route, including those in included routers (FastAPI nests them)."""

    def walk(routes):
        for r in routes:
            if hasattr(r, "original_router"):
                yield from walk(r.original_router.routes)
            elif hasattr(r, "path"):
                yield r

    return list(walk(app.routes))
