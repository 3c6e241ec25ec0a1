"""Erasure on request (admins): one student's data or one session's students' data, through
the audited service in app/erasure.py."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from app.auth import client_address
from app.deps import CurrentAdmin, DbSession, Res
from app.erasure import (
    NotFound,
    erase_session_data,
    erase_student,
    forget_live,
    forget_session,
)

router = APIRouter(prefix="/api/admin", tags=["privacy"])


@router.delete("/students/{student_id}")
async def delete_student(
    student_id: uuid.UUID, admin: CurrentAdmin, db: DbSession, res: Res, request: Request
) -> dict[str, Any]:
    """Delete all data of one student (name, consent records, buckets, alerts) on request."""
    try:
        out = await run_in_threadpool(erase_student, db, admin, student_id, client_address(request))
    except NotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    with contextlib.suppress(RedisError):  # live copies expire within a day; the rows are gone
        await forget_live(res.redis, out["session_id"], [out["student_id"]])
    return out


@router.delete("/sessions/{session_id}/data")
async def delete_session_data(
    session_id: uuid.UUID, admin: CurrentAdmin, db: DbSession, res: Res, request: Request
) -> dict[str, Any]:
    """Delete all data of a session's students (names, consent records, buckets, class
    buckets, alerts); the session itself stays listed, ended, with nobody in it."""
    try:
        out, students, was_live = await run_in_threadpool(
            erase_session_data, db, admin, session_id, client_address(request)
        )
    except NotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    await forget_session(res.redis, str(session_id), students, was_live)
    return out
