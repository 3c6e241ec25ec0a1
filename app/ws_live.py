"""``WS /ws/sessions/{id}/live``: the teacher's dashboard feed — a snapshot, then every update.

Only the session's teacher or an admin may watch. The hub subscription is made before the
snapshot is read, so an update that lands in between is sent twice rather than lost.
"""

from __future__ import annotations

import logging
import uuid

import msgspec
from fastapi import APIRouter, WebSocket
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from app import ws_common as wsc
from app.auth import TokenError, access_token_from, decode_access_token
from app.deps import Res
from app.hub import DropOldestQueue
from app.privacy import record_view
from app.resources import Resources
from app.routes.sessions import can_watch, find_session
from app.snapshot import build_snapshot
from classpulse.db import User

log = logging.getLogger(__name__)
router = APIRouter()

# A dashboard that falls this far behind (a frozen tab) loses its oldest updates, not memory.
LIVE_QUEUE = 512


def _check(
    res: Resources, ws: WebSocket, user_id: int, session_id: str
) -> tuple[int, str] | uuid.UUID:
    """The session's id if this user may watch it, else a close code and reason."""
    with res.sessionmaker() as db:
        user = db.get(User, user_id)
        if user is None or not user.active:
            return wsc.UNAUTHORIZED, "account no longer active"
        session = find_session(db, session_id)
        if session is None:
            return wsc.NOT_FOUND, "session not found"
        if not can_watch(user, session):
            return wsc.FORBIDDEN, "not your session"
        if res.policy.policy.per_student:  # a view of per-student data: audited
            ip = ws.client.host if ws.client else None
            record_view(db, user, "view.live", session.id, ip)
        return session.id


@router.websocket("/ws/sessions/{session_id}/live")
async def live_socket(ws: WebSocket, session_id: str, res: Res, token: str = "") -> None:
    if not wsc.origin_allowed(ws, res.settings):
        return await wsc.refuse(ws, wsc.FORBIDDEN, "origin not allowed")
    # The Origin check above is what makes the cookie safe here (no cross-site socket hijacking).
    token = token or (access_token_from(ws)[0] or "")
    try:
        claims = decode_access_token(res.settings, token)
    except TokenError as exc:
        return await wsc.refuse(ws, wsc.UNAUTHORIZED, str(exc))
    checked = await run_in_threadpool(_check, res, ws, claims.user_id, session_id)
    if not isinstance(checked, uuid.UUID):
        return await wsc.refuse(ws, *checked)

    queue = DropOldestQueue(LIVE_QUEUE)
    gauge = res.metrics.sockets.labels("teacher")
    await ws.accept()
    gauge.inc()
    try:
        with res.hub.subscribe(str(checked), queue):
            try:
                snapshot = await build_snapshot(
                    res.redis, res.sessionmaker, checked, res.policy.policy
                )
            except RedisError as exc:
                log.warning("live socket: no snapshot, Redis unavailable: %s", exc)
                return await wsc.close(ws, 1011, "Redis unavailable; reconnect later")
            await ws.send_text(msgspec.json.encode(snapshot).decode())

            async def receive() -> None:
                while True:
                    message = await ws.receive()
                    if message["type"] == "websocket.disconnect":
                        return
                    if message.get("text") == "ping":  # keep-alive through idle proxies
                        queue.push("pong")

            async def send() -> None:
                while True:
                    item = await queue.get()
                    await ws.send_text(item if isinstance(item, str) else item.decode())

            await wsc.run_pair(receive, send)
    finally:
        gauge.dec()
        await wsc.close(ws)
