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
DEVICE_COOKIE = "cp_device"
DEVICE_TTL_S = 180 * 24 * 3600
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
    # The account's token version when the token was made; logout, a password change or a
    # deactivation bumps the account's, which ends every older token at once.
    version: int


@dataclass(frozen=True)
class StudentClaims:
    student_id: uuid.UUID
    session_id: uuid.UUID


def _key(settings: Settings) -> str:
    if not settings.secret_key:  # create_app fills it (classpulse.settings.with_signing_key)
        raise RuntimeError("no signing key: build the settings with with_signing_key()")
    return settings.secret_key


def _encode(settings: Settings, claims: dict[str, Any], ttl_s: int) -> str:
    now = int(time.time())
    return jwt.encode({**claims, "iat": now, "exp": now + ttl_s}, _key(settings), ALGORITHM)


def _decode(settings: Settings, token: str, typ: str) -> dict[str, Any]:
    try:
        claims = jwt.decode(
            token,
            _key(settings),
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


def create_access_token(settings: Settings, user_id: int, role: str, version: int = 0) -> str:
    claims = {"sub": str(user_id), "role": role, "typ": "access", "ver": version}
    return _encode(settings, claims, settings.access_token_ttl_s)


def decode_access_token(settings: Settings, token: str) -> AccessClaims:
    claims = _decode(settings, token, "access")
    try:
        return AccessClaims(
            user_id=int(claims["sub"]),
            role=str(claims.get("role", "")),
            version=int(claims.get("ver", -1)),
        )
    except (TypeError, ValueError) as exc:
        raise TokenError("invalid token") from exc


def create_device_token(settings: Settings, email: str) -> str:
    """Marks a browser that logged in to this account before (OWASP's "device cookie"): such a
    browser keeps logging in while strangers' guesses have the account's login locked."""
    return _encode(settings, {"sub": email, "typ": "device"}, DEVICE_TTL_S)


def device_email(settings: Settings, conn: HTTPConnection) -> str | None:
    """The account this browser's device cookie was issued for, if it carries a valid one."""
    token = conn.cookies.get(DEVICE_COOKIE)
    if not token:
        return None
    try:
        return str(_decode(settings, token, "device")["sub"])
    except TokenError:
        return None


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


def client_address(conn: HTTPConnection) -> str | None:
    """The client's address; behind a trusted proxy (``forwarded_allow_ips``) uvicorn has already
    replaced the proxy's address with the one in X-Forwarded-For."""
    return conn.client.host if conn.client else None
