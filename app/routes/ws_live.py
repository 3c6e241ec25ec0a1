"""``WS /ws/sessions/{id}/live``: the teacher's dashboard feed — a snapshot, then every update.

Only the session's teacher or an admin may watch. The hub subscription is made before the
snapshot is read, so an update that lands in between is sent twice rather than lost.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import msgspec
from fastapi import APIRouter, WebSocket
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from app import ws_common as wsc
from app.auth import (
    AccessClaims,
    TokenError,
    access_token_from,
    client_address,
    decode_access_token,
)
from app.deps import Res
from app.hub import DropOldestQueue
from app.policy_views import record_view
from app.resources import Resources
from app.session_access import can_watch, find_session
from app.snapshot import build_snapshot
from classpulse import contracts, views
from classpulse.db import User

log = logging.getLogger(__name__)
router = APIRouter()

# A dashboard that falls this far behind (a frozen tab) loses its oldest updates, not memory.
LIVE_QUEUE = 512


@dataclass
class _Allowed:
    session_id: uuid.UUID
    audited: bool  # ``view.live`` recorded for this socket (once per socket is enough)


def _check(
    res: Resources, ws: WebSocket, claims: AccessClaims, session_id: str
) -> tuple[int, str] | _Allowed:
    """The session if this user may watch it, else a close code and reason."""
    with res.sessionmaker() as db:
        user = db.get(User, claims.user_id)
        if user is None or not user.active:
            return wsc.UNAUTHORIZED, "account no longer active"
        if user.token_version != claims.version:
            return wsc.UNAUTHORIZED, "token ended (logout or password change)"
        session = find_session(db, session_id)
        if session is None:
            return wsc.NOT_FOUND, "session not found"
        if not can_watch(user, session):
            # The same answer as for a session that does not exist, as the HTTP routes give.
            return wsc.NOT_FOUND, "session not found"
        audited = views.shows_student_data(res.policy.policy)
        if audited:  # a view of per-student data (estimates or attention): audited
            record_view(db, user, "view.live", session.id, client_address(ws))
        return _Allowed(session.id, audited)


def _audit_late(res: Resources, ip: str | None, user_id: int, session_id: uuid.UUID) -> None:
    """``view.live`` for a socket that starts showing per-student data after it connected (the
    policy became ``per_student`` while the dashboard was open)."""
    with res.sessionmaker() as db:
        user = db.get(User, user_id)
        if user is not None:
            record_view(db, user, "view.live", session_id, ip, reason="policy changed")


def _shows_per_student(item: bytes | str) -> bool:
    """Whether a hub message starts a per-student view: a policy change to ``per_student``, or
    a student's update that carries an emotion estimate (the aggregator may apply the new
    policy before the policy message gets here). Cheap for the many updates that are neither:
    only candidates are decoded."""
    if isinstance(item, str) or not (
        b'"policy"' in item or views.may_carry_estimate(item) or views.may_carry_attention(item)
    ):
        return False
    msg = views.json_object(item)
    if msg is None:
        return False
    if msg.get("type") == "policy":
        return views.shows_students(msg.get("emotion_mode")) or msg.get("attention") is True
    # Attention reaches a socket only while the policy observes it (the hub withholds it else).
    return views.carries_estimate(msg) or views.carries_attention(msg)


@router.websocket("/ws/sessions/{session_id}/live")
async def live_socket(ws: WebSocket, session_id: str, res: Res) -> None:
    if not wsc.origin_allowed(ws, res.settings):
        return await wsc.refuse(ws, wsc.FORBIDDEN, "origin not allowed")
    # The Origin check above is what makes the cookie safe here (no cross-site socket hijacking).
    token = wsc.socket_token(ws) or access_token_from(ws)[0] or ""
    try:
        claims = decode_access_token(res.settings, token)
    except TokenError as exc:
        return await wsc.refuse(ws, wsc.UNAUTHORIZED, str(exc))
    checked = await run_in_threadpool(_check, res, ws, claims, session_id)
    if not isinstance(checked, _Allowed):
        return await wsc.refuse(ws, *checked)
    sid = checked.session_id

    async def audit_if_needed() -> None:
        if not checked.audited:
            await run_in_threadpool(_audit_late, res, client_address(ws), claims.user_id, sid)
            checked.audited = True

    queue = DropOldestQueue(LIVE_QUEUE)
    gauge = res.metrics.sockets.labels("teacher")
    await wsc.accept(ws)
    gauge.inc()
    close_with = (1000, "")
    try:
        # The account's channel too: logout, a password change or a deactivation ends the view.
        account = contracts.account_topic(claims.user_id)
        with res.hub.subscribe(str(sid), queue), res.hub.subscribe(account, queue):
            await res.hub.joined(str(sid), account)  # before the snapshot: no update falls between
            policy = res.policy.policy
            try:
                snapshot = await build_snapshot(res.redis, res.sessionmaker, sid, policy)
            except RedisError as exc:
                log.warning("live socket: no snapshot, Redis unavailable: %s", exc)
                return await wsc.close(ws, 1011, "Redis unavailable; reconnect later")
            if views.shows_student_data(
                policy
            ):  # the policy changed to show per-student data since the check
                await audit_if_needed()
            await ws.send_text(msgspec.json.encode(snapshot).decode())

            async def receive() -> None:
                while True:
                    message = await ws.receive()
                    if message["type"] == "websocket.disconnect":
                        return
                    if message.get("text") == "ping":  # keep-alive through idle proxies
                        queue.push("pong")

            async def send() -> None:
                nonlocal close_with
                while True:
                    item = await queue.get()
                    if item == contracts.REVOKED_MESSAGE:
                        close_with = (wsc.UNAUTHORIZED, "logged out")
                        return
                    if not checked.audited and _shows_per_student(item):
                        # From here on per-student emotions flow to this dashboard: audited
                        # before the first of them is sent.
                        await audit_if_needed()
                    await ws.send_text(item if isinstance(item, str) else item.decode())

            await wsc.run_pair(receive, send)
    finally:
        gauge.dec()
        await wsc.close(ws, *close_with)
