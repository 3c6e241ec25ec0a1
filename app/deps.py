"""Dependencies: resources from the lifespan state, the database session and the caller's identity."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.templating import Jinja2Templates
from redis.asyncio import Redis
from sqlalchemy.orm import Session
from starlette.requests import HTTPConnection

from app.auth import (
    StudentClaims,
    TokenError,
    access_token_from,
    bearer_token,
    csrf_ok,
    decode_access_token,
    decode_student_token,
)
from app.resources import Resources
from classpulse.db import User
from classpulse.settings import Settings


def get_resources(conn: HTTPConnection) -> Resources:
    return conn.state.res  # set by the lifespan (Starlette lifespan state), not stuck on `app`


Res = Annotated[Resources, Depends(get_resources)]


def get_settings_dep(res: Res) -> Settings:
    return res.settings


def get_redis(res: Res) -> Redis:
    return res.redis


def get_templates(res: Res) -> Jinja2Templates:
    return res.templates


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
RedisDep = Annotated[Redis, Depends(get_redis)]
Templates = Annotated[Jinja2Templates, Depends(get_templates)]


def get_db(res: Res) -> Iterator[Session]:
    # A sync generator: FastAPI runs it, and the sync handlers using it, in its thread pool.
    with res.sessionmaker() as session:
        yield session


DbSession = Annotated[Session, Depends(get_db)]


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"}
    )


def current_user(conn: HTTPConnection, res: Res, db: DbSession) -> User:
    token, from_cookie = access_token_from(conn)
    if not token:
        raise _unauthorized("not authenticated: log in, then send the bearer token or cookie")
    try:
        claims = decode_access_token(res.settings, token)
    except TokenError as exc:
        raise _unauthorized(f"not authenticated: {exc}") from exc
    if not csrf_ok(conn, from_cookie):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "cookie-authenticated requests need X-ClassPulse-CSRF: 1"
        )
    user = db.get(User, claims.user_id)
    if user is None or not user.active:
        raise _unauthorized("not authenticated: the account no longer exists or is disabled")
    if claims.version != user.token_version:
        raise _unauthorized("not authenticated: this token was ended (logout or password change)")
    return user


def current_teacher(user: Annotated[User, Depends(current_user)]) -> User:
    """Teachers and admins (an admin can do whatever a teacher can)."""
    if user.role not in ("teacher", "admin"):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "teachers only")
    return user


def current_admin(user: Annotated[User, Depends(current_user)]) -> User:
    if user.role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "administrators only")
    return user


def current_student(conn: HTTPConnection, res: Res) -> StudentClaims:
    token = bearer_token(conn)
    if not token:
        raise _unauthorized("not authenticated: send the student token as a bearer token")
    try:
        return decode_student_token(res.settings, token)
    except TokenError as exc:
        raise _unauthorized(f"not authenticated: {exc}") from exc


CurrentUser = Annotated[User, Depends(current_user)]
CurrentTeacher = Annotated[User, Depends(current_teacher)]
CurrentAdmin = Annotated[User, Depends(current_admin)]
CurrentStudent = Annotated[StudentClaims, Depends(current_student)]
