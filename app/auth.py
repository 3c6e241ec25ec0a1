"""Signed tokens (JWT HS256) for teachers/admins and students, and where a request carries them."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from starlette.requests import HTTPConnection

from classpulse.settings import Settings

ALGORITHM = "HS256"
ACCESS_COOKIE = "cp_access"
CSRF_HEADER = "x-classpulse-csrf"
# Cookie-authenticated requests that change state must carry this header. A cross-site form
# cannot set custom headers, and a cross-site fetch that tries needs a CORS preflight this
# same-origin app never grants: that is the CSRF defence, on top of SameSite=Lax.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class TokenError(Exception):
    """A token that is missing, malformed, expired, signed with another key or of the wrong kind."""


@dataclass(frozen=True)
class AccessClaims:
    user_id: int
    role: str


@dataclass(frozen=True)
class StudentClaims:
    student_id: uuid.UUID
    session_id: uuid.UUID


def _encode(settings: Settings, claims: dict[str, Any], ttl_s: int) -> str:
    now = int(time.time())
    return jwt.encode({**claims, "iat": now, "exp": now + ttl_s}, settings.secret_key, ALGORITHM)


def _decode(settings: Settings, token: str, typ: str) -> dict[str, Any]:
    try:
        claims = jwt.decode(
            token,
            settings.secret_key,
            algorithms=[ALGORITHM],  # never let the token pick its algorithm ("none", RS/HS mix-up)
            options={"require": ["exp", "sub", "typ"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("token expired") from exc
    except jwt.PyJWTError as exc:
        raise TokenError("invalid token") from exc
    if claims.get("typ") != typ:
        raise TokenError(f"not a {typ} token")
    return claims


def create_access_token(settings: Settings, user_id: int, role: str) -> str:
    claims = {"sub": str(user_id), "role": role, "typ": "access"}
    return _encode(settings, claims, settings.access_token_ttl_s)


def decode_access_token(settings: Settings, token: str) -> AccessClaims:
    claims = _decode(settings, token, "access")
    try:
        return AccessClaims(user_id=int(claims["sub"]), role=str(claims.get("role", "")))
    except ValueError as exc:
        raise TokenError("invalid token") from exc


def create_student_token(settings: Settings, student_id: uuid.UUID, session_id: uuid.UUID) -> str:
    claims = {"sub": str(student_id), "sid": str(session_id), "typ": "student"}
    return _encode(settings, claims, settings.student_token_ttl_s)


def decode_student_token(settings: Settings, token: str) -> StudentClaims:
    claims = _decode(settings, token, "student")
    try:
        return StudentClaims(uuid.UUID(claims["sub"]), uuid.UUID(str(claims.get("sid"))))
    except ValueError as exc:
        raise TokenError("invalid token") from exc


def bearer_token(conn: HTTPConnection) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if any."""
    scheme, _, token = conn.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def access_token_from(conn: HTTPConnection) -> tuple[str | None, bool]:
    """(token, from_cookie): the bearer header wins over the cookie."""
    token = bearer_token(conn)
    if token:
        return token, False
    return conn.cookies.get(ACCESS_COOKIE) or None, True


def csrf_ok(conn: HTTPConnection, from_cookie: bool) -> bool:
    method = conn.scope.get("method", "GET")
    return not from_cookie or method in SAFE_METHODS or conn.headers.get(CSRF_HEADER) == "1"
