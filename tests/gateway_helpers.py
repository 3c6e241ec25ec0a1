"""Helpers the gateway tests share (no tests here): accounts, clients, tokens and a real JPEG.

Imported by the other ``test_api_*``, ``test_ws_*`` and ``test_gateway_*`` modules. Accounts get a password hash computed once: argon2 costs a third of a
second here, and only the login tests need to pay it per call.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any, NamedTuple

from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy.orm import Session
from starlette.testclient import WebSocketTestSession

from app.auth import create_access_token
from app.main import create_app
from classpulse import contracts
from classpulse.accounts import hash_password
from classpulse.db import User, make_engine
from classpulse.settings import Settings

PASSWORD = "correct horse battery"


@cache
def _password_hash() -> str:
    return hash_password(PASSWORD)


def make_user(settings: Settings, email: str, role: str = "teacher") -> int:
    """Insert an account with PASSWORD; return its id."""
    engine = make_engine(settings.database_url or "")
    try:
        with Session(engine) as db:
            user = User(
                email=email,
                password_hash=_password_hash(),
                role=role,
                display_name=email.split("@")[0],
            )
            db.add(user)
            db.commit()
            return user.id
    finally:
        engine.dispose()


def bearer(settings: Settings, user_id: int, role: str = "teacher") -> dict[str, str]:
    """Authorization header with the same token the login returns (without paying argon2)."""
    return {"Authorization": "Bearer " + create_access_token(settings, user_id, role)}


@contextmanager
def client_for(settings: Settings) -> Iterator[TestClient]:
    """A TestClient with the lifespan running (engine, Redis, hub, frame writer)."""
    with TestClient(create_app(settings), base_url="http://testserver") as client:
        yield client


def new_session(
    client: TestClient, headers: dict[str, str], title: str = "Maths 4B"
) -> dict[str, Any]:
    r = client.post("/api/sessions", json={"title": title}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def join(client: TestClient, code: str, name: str = "Ada") -> dict[str, Any]:
    r = client.post(f"/api/join/{code}", json={"display_name": name, "consent": True})
    assert r.status_code == 201, r.text
    return r.json()


class Joined(NamedTuple):
    """A running app, a teacher's session and one student who joined it."""

    client: TestClient
    headers: dict[str, str]  # the teacher's
    session: dict[str, Any]
    student: dict[str, Any]


@contextmanager
def joined_session(
    settings: Settings, name: str = "Ada", teacher: str = "t@school.example"
) -> Iterator[Joined]:
    """A teacher account, a client with the app running, the teacher's session and ``name``
    joined to it (with consent)."""
    teacher_id = make_user(settings, teacher)
    with client_for(settings) as client:
        headers = bearer(settings, teacher_id)
        session = new_session(client, headers)
        yield Joined(client, headers, session, join(client, session["join_code"], name))


def next_json(
    ws: WebSocketTestSession, match: Callable[[dict[str, Any]], bool], limit: int = 50
) -> dict[str, Any]:
    """The next message that matches, skipping others (presence echoes arrive in any order)."""
    for _ in range(limit):
        msg = ws.receive_json()
        if match(msg):
            return msg
    raise AssertionError(f"no matching message in {limit}")


def student_update(
    session: dict[str, Any], student: dict[str, Any], t: float | None = None, **fields: Any
) -> contracts.LiveUpdate:
    """A live update about ``student`` in ``session`` (stamped now unless ``t``), as the
    aggregator publishes it."""
    return contracts.LiveUpdate(
        type="student",
        session_id=session["id"],
        student_id=student["student_id"],
        t=time.time() if t is None else t,
        **fields,
    )


def _encode(fmt: str, size: tuple[int, int] = (64, 48)) -> bytes:
    image = Image.new("RGB", size, (200, 120, 80))
    out = io.BytesIO()
    image.save(out, fmt, quality=70) if fmt == "JPEG" else image.save(out, fmt)
    return out.getvalue()


JPEG = _encode("JPEG")
PNG = _encode("PNG")


def token_protocols(token: str) -> list[str]:
    """The subprotocols a page offers to carry its token in the WebSocket handshake."""
    from app.ws_common import SUBPROTOCOL, TOKEN_PREFIX

    return [SUBPROTOCOL, TOKEN_PREFIX + token]


# --- 5. login limits -------------------------------------------------------------------------
@contextmanager
def from_address(client, address: str):
    """Requests of this block come from ``address`` (as uvicorn reports it, proxy resolved)."""
    transport = client._transport
    before = transport.client
    transport.client = (address, 50000)
    try:
        yield client
    finally:
        transport.client = before
