"""Account management for administrators."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, status
from pydantic import BaseModel, Field
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from app.accounts import UserOut, revoke
from app.deps import CurrentAdmin, DbSession, RedisDep
from app.text_rules import PlainText
from classpulse.accounts import AccountError, active_admins, create_user
from classpulse.db import User

router = APIRouter(prefix="/api/admin", tags=["admin"])


class UserPatch(BaseModel):
    active: bool


class UserIn(BaseModel):
    email: Annotated[str, Field(max_length=320), PlainText]
    password: str = Field(max_length=1024)  # hashed, never stored as text: anything goes
    role: Literal["teacher", "admin"] = "teacher"
    display_name: Annotated[str, Field(max_length=200), PlainText] = ""


@router.post("/users", response_model=UserOut, status_code=status.HTTP_201_CREATED)
async def add_user(body: UserIn, _admin: CurrentAdmin, db: DbSession) -> UserOut:
    """Create a teacher or admin account."""

    def create() -> User:  # hashing is CPU work: a thread, not the event loop
        if db.scalar(select(User.id).where(User.email == body.email.strip().lower())):
            raise HTTPException(status.HTTP_409_CONFLICT, "an account with this email exists")
        user = create_user(db, body.email, body.password, body.role, body.display_name.strip())
        db.commit()
        return user

    try:
        user = await run_in_threadpool(create)
    except AccountError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    return UserOut.of(user)


@router.get("/users", response_model=list[UserOut])
def list_users(_admin: CurrentAdmin, db: DbSession) -> list[UserOut]:
    return [UserOut.of(u) for u in db.scalars(select(User).order_by(User.id))]


@router.patch("/users/{user_id}", response_model=UserOut)
async def update_user(
    user_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    body: UserPatch,
    _admin: CurrentAdmin,
    db: DbSession,
    redis: RedisDep,
) -> UserOut:
    """Deactivate (every token of the account ends at once, its open dashboards close) or
    reactivate an account. The last active admin cannot be deactivated."""
    user = db.get(User, user_id)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such account")
    if not body.active and user.active and user.role == "admin" and active_admins(db) <= 1:
        raise HTTPException(status.HTTP_409_CONFLICT, "the last active admin cannot be deactivated")
    user.active = body.active
    if body.active:
        db.commit()
    else:
        await revoke(db, redis, user)  # commits the deactivation with the new token version
    return UserOut.of(user)
