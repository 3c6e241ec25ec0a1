"""The organisation's privacy policy (admins): read it, change it (audited, applied to the next
frame)."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, StrictBool
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.auth import client_address
from app.deps import CurrentAdmin, DbSession, Res
from app.policy_views import announce_policy, live_session_ids
from classpulse import audit
from classpulse import policy as policy_mod
from classpulse.db import (
    OrgPolicy,
    User,
)
from classpulse.policy import Policy, PolicyError

router = APIRouter(prefix="/api/admin", tags=["privacy"])


class PolicyOut(BaseModel):
    emotion_mode: str
    min_group_size: int
    retention_days: int
    attention: bool  # head orientation ("facing the screen") observed
    updated_at: datetime | None = None
    updated_by: str | None = None


class PolicyIn(BaseModel):
    """Fields left out keep their current value."""

    emotion_mode: str | None = None
    min_group_size: int | None = None
    retention_days: int | None = None
    # Strict: "yes" or 1 is refused rather than read as a switch turned on.
    attention: StrictBool | None = None


def _policy_out(db: Session) -> PolicyOut:
    row = db.get(OrgPolicy, 1)
    current = policy_mod.load(db)
    by = db.get(User, row.updated_by_id) if row and row.updated_by_id else None
    return PolicyOut(
        **current.as_dict(),
        updated_at=row.updated_at if row else None,
        updated_by=by.email if by else None,
    )


@router.get("/policy", response_model=PolicyOut)
def get_policy(_admin: CurrentAdmin, db: DbSession) -> PolicyOut:
    """The organisation's privacy policy."""
    return _policy_out(db)


@router.put("/policy", response_model=PolicyOut)
async def put_policy(
    body: PolicyIn, admin: CurrentAdmin, db: DbSession, res: Res, request: Request
) -> PolicyOut:
    """Change the policy: stored with its audit entry in one transaction, then applied to the
    next frame (this gateway at once, the workers and the aggregator from their next batch)."""

    def change() -> tuple[Policy, int, PolicyOut, list[uuid.UUID]]:
        db.execute(select(OrgPolicy).where(OrgPolicy.id == 1).with_for_update())
        before = policy_mod.load(db)
        after = Policy(
            body.emotion_mode or before.emotion_mode,  # type: ignore[arg-type]
            before.min_group_size if body.min_group_size is None else body.min_group_size,
            before.retention_days if body.retention_days is None else body.retention_days,
            before.attention if body.attention is None else body.attention,
        )
        try:
            stamp = policy_mod.save(db, after, admin.id)  # the row's new version
        except PolicyError as exc:
            db.rollback()
            raise HTTPException(422, str(exc)) from exc
        audit.record(
            db,
            admin,
            "policy.update",
            "policy",
            1,
            {"before": before.as_dict(), "after": after.as_dict()},
            client_address(request),
        )
        db.commit()
        return after, stamp, _policy_out(db), live_session_ids(db)

    policy, stamp, out, sessions = await run_in_threadpool(change)
    try:
        await res.policy.set(policy, stamp)
        await announce_policy(res.redis, sessions, policy)
    except RedisError as exc:
        # Stored (and audited), but the other processes can't see it until Redis is back; the
        # gateways re-mirror PostgreSQL's policy periodically, so it does apply then.
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"policy stored but not yet applied: Redis is unavailable ({exc})",
        ) from exc
    return out
