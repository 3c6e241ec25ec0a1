"""Accounts as the routes share them: how an account is shown (``UserOut``), ending its
tokens (bump the token version, then close its open dashboards), and the failed-login counts
every check of a password goes against (login, password change, an admin's re-authentication)."""

from __future__ import annotations

import logging
from typing import Literal

from fastapi import HTTPException, status
from pydantic import BaseModel
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from app.auth import client_address, device_email
from app.ratelimit import Limit, Refused, address_key, refund, reserve
from app.resources import Resources
from classpulse import contracts
from classpulse.accounts import revoke_tokens, verify_password
from classpulse.db import User
from classpulse.settings import Settings

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


def login_limits(settings: Settings, conn: HTTPConnection, email: str) -> tuple[Limit, ...]:
    """The failure counts a password check of ``email`` from this client goes against.

    A browser that logged in to the account before (its device cookie says so) has a count of
    its own per account, which strangers cannot use up, and is not counted per address: a student
    guessing from the school's address locks out neither the teacher's browser nor the school.
    Every other attempt counts per address and per account."""
    per_account = settings.login_attempts_per_minute
    if device_email(settings, conn) == email:
        message = "too many wrong passwords from this browser; wait a minute"
        return (Limit("cp:login:fail:device:" + email, per_account, "login_account", message),)
    address = address_key(client_address(conn))
    return (
        Limit(
            "cp:login:fail:ip:" + address,
            settings.login_failures_per_minute_per_address,
            "login_address",
            "too many failed logins from this address; wait a minute",
        ),
        Limit(
            "cp:login:fail:email:" + email,
            per_account,
            "login_account",
            "too many failed logins for this account; wait a minute, or log in from a browser"
            " that has logged in to it before",
        ),
    )


async def reserve_attempt(res: Resources, limits: tuple[Limit, ...], what: str) -> None:
    try:
        await reserve(res.redis, *limits)
    except Refused as refused:
        res.metrics.rate_limited.labels(refused.limit.metric).inc()
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            refused.limit.message,
            headers={"Retry-After": str(refused.retry_after)},
        ) from None
    except RedisError as exc:
        raise HTTPException(
            503, f"{what} is unavailable: the rate limiter cannot reach Redis"
        ) from exc


async def refund_attempt(res: Resources, limits: tuple[Limit, ...]) -> None:
    """The password was right: its attempt is not a failure."""
    try:
        await refund(res.redis, *(limit.key for limit in limits))
    except RedisError as exc:
        log.warning("cannot take back a correct password's count: %s", exc)


async def check_current_password(
    res: Resources, conn: HTTPConnection, user: User, password: str
) -> None:
    """403 unless ``password`` is ``user``'s: for actions that need the password re-entered. A
    wrong one counts as a failed login of the account (429 past the limits), so a stolen session
    is no way around the login limits."""
    limits = login_limits(res.settings, conn, user.email)
    await reserve_attempt(res, limits, "checking the password")
    if not await run_in_threadpool(verify_password, user.password_hash, password):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the current password is wrong")
    await refund_attempt(res, limits)
