"""Account management for administrators: list, create, change (active, role, display name)
and one-time set-password links; every change audited."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Request, status
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.accounts import UserOut, check_current_password, revoke
from app.auth import client_address
from app.deps import CurrentAdmin, DbSession, RedisDep, Res, SettingsDep
from app.text_rules import PlainText, TeacherName
from classpulse import audit
from classpulse.accounts import (
    AccountError,
    create_user,
    issue_password_link,
    set_display_name,
    void_password_links,
)
from classpulse.db import ClassSession, User
from classpulse.settings import Settings

router = APIRouter(prefix="/api/admin", tags=["admin"])
UserId = Annotated[int, Path(ge=1, le=2**31 - 1)]


class UserPatch(BaseModel):
    """Fields left out keep their value."""

    active: bool | None = None
    role: Literal["teacher", "admin"] | None = None
    display_name: Annotated[str, Field(max_length=200), TeacherName] | None = None


class UserIn(BaseModel):
    email: Annotated[str, Field(max_length=320), PlainText]
    # Hashed, never stored as text: anything goes. Left out: the account gets a one-time
    # set-password link instead (in the answer), for the admin to pass on.
    password: str | None = Field(default=None, max_length=1024)
    role: Literal["teacher", "admin"] = "teacher"
    display_name: Annotated[str, Field(max_length=200), TeacherName] = ""


class PasswordLinkOut(BaseModel):
    """Shown once: only its hash is stored. Works once, until ``expires_at``."""

    url: str
    expires_at: datetime


class AdminUserOut(UserOut):
    active: bool
    created_at: datetime
    last_login_at: datetime | None
    sessions_owned: int
    password_link: PasswordLinkOut | None = None  # only when the account was made without one


def _owned(db: Session, ids: list[int]) -> dict[int, int]:
    query = (
        select(ClassSession.owner_id, func.count())
        .where(ClassSession.owner_id.in_(ids))
        .group_by(ClassSession.owner_id)
    )
    return {owner: n for owner, n in db.execute(query).all()}


def _out(user: User, owned: int = 0, link: PasswordLinkOut | None = None) -> AdminUserOut:
    return AdminUserOut(
        **UserOut.of(user).model_dump(),
        active=user.active,
        created_at=user.created_at,
        last_login_at=user.last_login_at,
        sessions_owned=owned,
        password_link=link,
    )


def _link_url(settings: Settings, request: Request, token: str) -> str:
    # In the fragment: a browser never sends it, so no access log or proxy keeps the token.
    base = (settings.public_url or str(request.base_url)).rstrip("/")
    return f"{base}/set-password#token={token}"


def _new_link(
    db: Session, user: User, admin: User, settings: Settings, request: Request
) -> PasswordLinkOut:
    token, expires = issue_password_link(db, user, admin)
    audit.record(
        db,
        admin,
        "account.password_link",
        "user",
        user.id,
        {"email": user.email, "expires_at": expires.isoformat()},
        client_address(request),
    )
    return PasswordLinkOut(url=_link_url(settings, request, token), expires_at=expires)


@router.post("/users", response_model=AdminUserOut, status_code=status.HTTP_201_CREATED)
async def add_user(
    body: UserIn, admin: CurrentAdmin, db: DbSession, settings: SettingsDep, request: Request
) -> AdminUserOut:
    """Create a teacher or admin account; without a password, with a set-password link."""

    def create() -> AdminUserOut:  # hashing is CPU work: a thread, not the event loop
        if db.scalar(select(User.id).where(User.email == body.email.strip().lower())):
            raise HTTPException(status.HTTP_409_CONFLICT, "an account with this email exists")
        # No password: an unusable random one until the link sets a real one.
        password = body.password if body.password is not None else secrets.token_urlsafe(32)
        user = create_user(db, body.email, password, body.role, body.display_name.strip())
        detail = {"email": user.email, "role": user.role}
        ip = client_address(request)
        audit.record(db, admin, "account.create", "user", user.id, detail, ip)
        link = None if body.password is not None else _new_link(db, user, admin, settings, request)
        db.commit()
        return _out(user, 0, link)

    try:
        return await run_in_threadpool(create)
    except AccountError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    except IntegrityError as exc:  # the same email created at the same moment
        db.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, "an account with this email exists") from exc


@router.get("/users", response_model=list[AdminUserOut])
def list_users(_admin: CurrentAdmin, db: DbSession) -> list[AdminUserOut]:
    """Every account, with its last login and how many sessions it owns."""
    users = list(db.scalars(select(User).order_by(User.id)))
    owned = _owned(db, [u.id for u in users])
    return [_out(u, owned.get(u.id, 0)) for u in users]


@router.patch("/users/{user_id}", response_model=AdminUserOut)
async def update_user(
    user_id: UserId,
    body: UserPatch,
    admin: CurrentAdmin,
    db: DbSession,
    redis: RedisDep,
    request: Request,
) -> AdminUserOut:
    """Deactivate (every token of the account ends at once, its open dashboards close) or
    reactivate an account, change its role or display name. The last active admin can be
    neither deactivated nor demoted (409)."""

    def change() -> tuple[User, bool]:
        # Locked: two admins demoting each other at once must not leave no admin at all.
        admins = db.scalars(
            select(User).where(User.role == "admin", User.active.is_(True)).with_for_update()
        ).all()
        user = db.get(User, user_id)
        if user is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such account")
        losing_admin = user.active and user.role == "admin"
        losing_admin = losing_admin and (body.active is False or body.role == "teacher")
        if losing_admin and len(admins) <= 1:
            action = "deactivated" if body.active is False else "made a teacher"
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"the last active admin cannot be {action}: make another admin first",
            )
        before = {"active": user.active, "role": user.role, "display_name": user.display_name}
        if body.active is not None:
            user.active = body.active
        if body.role is not None:
            user.role = body.role
        if body.display_name is not None:
            try:
                set_display_name(user, body.display_name)
            except AccountError as exc:
                raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
        after = {"active": user.active, "role": user.role, "display_name": user.display_name}
        changed = {
            k: {"before": before[k], "after": after[k]} for k in after if before[k] != after[k]
        }
        if changed:
            detail = {"email": user.email, **changed}
            ip = client_address(request)
            audit.record(db, admin, "account.update", "user", user.id, detail, ip)
        # A deactivation or a demotion ends the account's tokens (whose claims still say admin);
        # a promotion needs no new login (the API reads the role from the database).
        ends_tokens = not user.active and "active" in changed
        ends_tokens = ends_tokens or ("role" in changed and user.role != "admin")
        if ends_tokens:
            void_password_links(db, user)
        return user, ends_tokens

    user, ends_tokens = await run_in_threadpool(change)
    if ends_tokens:
        await revoke(db, redis, user)  # commits the change with the new token version
    else:
        await run_in_threadpool(db.commit)
    owned = await run_in_threadpool(_owned, db, [user.id])
    return _out(user, owned.get(user.id, 0))


class ReauthIn(BaseModel):
    """The acting admin's own password, entered again."""

    current_password: str = Field(max_length=1024)


@router.post(
    "/users/{user_id}/password-link",
    response_model=PasswordLinkOut,
    status_code=status.HTTP_201_CREATED,
)
async def new_password_link(
    user_id: UserId,
    body: ReauthIn,
    admin: CurrentAdmin,
    db: DbSession,
    res: Res,
    request: Request,
) -> PasswordLinkOut:
    """A one-time set-password link for the account (shown once; 24 h; the account's older
    links end). The password stays as it is until the link is used.

    The link takes over the account, so the acting admin enters their own password again, for
    every account, theirs and other admins' included: a stolen or unattended admin session cannot
    take over accounts. A wrong password is 403, audited (``account.password_link_refused``) and
    counted as a failed login of the admin's account (429 past the login limits)."""
    user = await run_in_threadpool(db.get, User, user_id)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such account")
    if not user.active:
        raise HTTPException(status.HTTP_409_CONFLICT, "reactivate the account first")
    try:
        await check_current_password(res, request, admin, body.current_password)
    except HTTPException as exc:
        if exc.status_code == status.HTTP_403_FORBIDDEN:

            def refused() -> None:
                detail = {"email": user.email, "reason": "wrong password"}
                ip = client_address(request)
                audit.record(
                    db, admin, "account.password_link_refused", "user", user.id, detail, ip
                )
                db.commit()

            await run_in_threadpool(refused)
        raise

    def issue() -> PasswordLinkOut:
        link = _new_link(db, user, admin, res.settings, request)
        db.commit()
        return link

    return await run_in_threadpool(issue)
