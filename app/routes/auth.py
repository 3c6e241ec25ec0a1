"""Login (bearer token + HttpOnly cookie), logout, password change and who-am-I.

Failed logins are limited, correct ones never (a whole school logs in from one NAT address):
per client address and per account for browsers the account has not logged in from, and per
account on their own count for browsers it has (a device cookie marks those), so a student
hammering the teacher's email can lock out neither the teacher's own browser nor the school.
Every other check of a password (a password change, an admin's re-authentication) goes against
the same counts.
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Request, Response, status
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from app.accounts import (
    UserOut,
    check_current_password,
    login_limits,
    refund_attempt,
    reserve_attempt,
    revoke,
)
from app.auth import (
    ACCESS_COOKIE,
    DEVICE_COOKIE,
    DEVICE_TTL_S,
    client_address,
    create_access_token,
    create_device_token,
)
from app.deps import CurrentUser, DbSession, Res, current_user
from app.text_rules import TeacherName
from classpulse import audit
from classpulse.accounts import (
    AccountError,
    authenticate,
    redeem_password_link,
    set_display_name,
    set_password,
)
from classpulse.db import User, utcnow
from classpulse.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/auth", tags=["auth"])


class LoginIn(BaseModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)  # argon2 of a megabyte "password" is a cheap DoS


class PasswordIn(BaseModel):
    current_password: str = Field(max_length=1024)
    new_password: str = Field(max_length=1024)


class SetPasswordIn(BaseModel):
    token: str = Field(min_length=1, max_length=200)  # from the link's fragment
    new_password: str = Field(max_length=1024)


class MePatch(BaseModel):
    display_name: Annotated[str, Field(max_length=200), TeacherName]


class LoginOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    user: UserOut


def secure_cookies(settings: Settings) -> bool:
    """Cookies only over HTTPS in production (the README requires a TLS proxy there)."""
    return settings.env == "production" or (settings.public_url or "").startswith("https://")


def _too_many(message: str, retry_after: int) -> HTTPException:
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS, message, headers={"Retry-After": str(retry_after)}
    )


def _issue(response: Response, settings: Settings, user: User) -> LoginOut:
    """A fresh access token for ``user``, also set as the HttpOnly cookie."""
    token = create_access_token(settings, user.id, user.role, user.token_version)
    response.set_cookie(
        ACCESS_COOKIE,
        token,
        max_age=settings.access_token_ttl_s,
        path="/",
        httponly=True,
        samesite="lax",
        secure=secure_cookies(settings),
    )
    return LoginOut(
        access_token=token, expires_in=settings.access_token_ttl_s, user=UserOut.of(user)
    )


@router.post("/login", response_model=LoginOut)
async def login(
    body: LoginIn,
    request: Request,
    response: Response,
    res: Res,
    db: DbSession,
) -> LoginOut:
    """Exchange email and password for an access token, also set as the `cp_access` cookie."""
    settings = res.settings
    email = body.email.strip().lower()
    # Failures are what count: an attempt is counted before its password is checked (parallel
    # guesses cannot all slip under a limit) and taken back when it was right.
    limits = login_limits(settings, request, email)
    await reserve_attempt(res, limits, "login")

    # argon2 verification costs tens of milliseconds of CPU: keep it off the event loop.
    def check() -> User | None:
        user = authenticate(db, body.email, body.password)
        if user is not None:
            user.last_login_at = utcnow()  # shown on the admin's people page
            db.commit()
        return user

    user = await run_in_threadpool(check)
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong email or password")
    await refund_attempt(res, limits)
    response.set_cookie(
        DEVICE_COOKIE,
        create_device_token(settings, email),
        max_age=DEVICE_TTL_S,
        path="/api/auth/login",  # read by the login alone
        httponly=True,
        samesite="strict",
        secure=secure_cookies(settings),
    )
    return _issue(response, settings, user)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(request: Request, response: Response, res: Res, db: DbSession) -> None:
    """Log out everywhere: every token of the account ends (other browsers, API tokens, open
    dashboards), and this browser's cookie is cleared. Without a valid token it only clears."""
    try:
        user = await run_in_threadpool(current_user, request, res, db)
    except HTTPException:
        user = None
    if user is not None:
        await revoke(db, res.redis, user)
    response.delete_cookie(
        ACCESS_COOKIE, path="/", httponly=True, samesite="lax", secure=secure_cookies(res.settings)
    )


@router.post("/password", response_model=LoginOut)
async def change_password(
    body: PasswordIn,
    user: CurrentUser,
    request: Request,
    response: Response,
    res: Res,
    db: DbSession,
) -> LoginOut:
    """Change your password: every other token of the account ends; this browser gets a new one.
    A wrong current password counts as a failed login."""
    await check_current_password(res, request, user, body.current_password)

    def change() -> None:
        try:
            set_password(user, body.new_password)
        except AccountError as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc

    await run_in_threadpool(change)
    await revoke(db, res.redis, user)  # commits the new hash with the new token version
    return _issue(response, res.settings, user)


@router.post("/set-password", response_model=LoginOut)
async def set_password_by_link(
    body: SetPasswordIn, request: Request, response: Response, res: Res, db: DbSession
) -> LoginOut:
    """Set a password with a one-time link an admin made (works once, until it expires): every
    older token of the account ends, and this browser is logged in."""

    def redeem() -> User:
        try:
            user = redeem_password_link(db, body.token, body.new_password)
        except AccountError as exc:
            db.rollback()
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
        user.last_login_at = utcnow()
        ip = client_address(request)
        audit.record(db, user, "account.password_set", "user", user.id, {"by": "link"}, ip)
        return user

    user = await run_in_threadpool(redeem)
    await revoke(db, res.redis, user)  # commits the hash, the used link and the new version
    return _issue(response, res.settings, user)


@router.get("/me", response_model=UserOut)
def me(user: CurrentUser) -> UserOut:
    return UserOut.of(user)


@router.patch("/me", response_model=UserOut)
def update_me(body: MePatch, request: Request, user: CurrentUser, db: DbSession) -> UserOut:
    """Change your display name: what students see as "Teacher: ..." (empty: the email's
    first part)."""
    before = user.display_name
    try:
        set_display_name(user, body.display_name)
    except AccountError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    if user.display_name != before:  # what students see: audited as when an admin changes it
        detail = {"display_name": {"before": before, "after": user.display_name}}
        audit.record(db, user, "account.update", "user", user.id, detail, client_address(request))
    db.commit()
    return UserOut.of(user)
