"""Accounts as the routes share them: how an account is shown (``UserOut``), and ending its
tokens (bump the token version, then close its open dashboards)."""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import BaseModel
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from classpulse import contracts
from classpulse.accounts import revoke_tokens
from classpulse.db import User

log = logging.getLogger(__name__)


class UserOut(BaseModel):
    id: int
    email: str
    role: Literal["teacher", "admin"]
    display_name: str

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(id=user.id, email=user.email, role=user.role, display_name=user.display_name)  # type: ignore[arg-type]


async def revoke(db: Session, redis: Redis, user: User) -> None:
    """Every token issued to ``user`` so far stops working with this commit; open live sockets
    of the account (on any gateway) are told through its channel and close."""

    def commit() -> None:
        revoke_tokens(user)
        db.commit()
        db.refresh(user)  # the new version, incremented in SQL

    await run_in_threadpool(commit)
    await announce_revoked(redis, user.id)


async def announce_revoked(redis: Redis, user_id: int) -> None:
    try:
        await redis.publish(
            contracts.live_channel(contracts.account_topic(user_id)), contracts.REVOKED_MESSAGE
        )
    except RedisError as exc:  # the tokens are dead already; sockets re-check when they next act
        log.warning("cannot announce revoked tokens of user %s: %s", user_id, exc)
