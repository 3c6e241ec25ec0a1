"""Account management for administrators."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from app.deps import CurrentAdmin, DbSession
from app.routes.auth import UserOut
from classpulse.accounts import AccountError, create_user
from classpulse.db import User

router = APIRouter(prefix="/api/admin", tags=["admin"])


class UserIn(BaseModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)
    role: Literal["teacher", "admin"] = "teacher"
    display_name: str = Field(default="", max_length=200)


@router.post("/users", response_model=UserOut, status_code=status.HTTP_201_CREATED)
async def add_user(body: UserIn, admin: CurrentAdmin, db: DbSession) -> UserOut:
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
def list_users(admin: CurrentAdmin, db: DbSession) -> list[UserOut]:
    return [UserOut.of(u) for u in db.scalars(select(User).order_by(User.id))]
