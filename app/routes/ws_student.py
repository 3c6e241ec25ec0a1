# Over 300 lines: one socket's frames, text messages and relayed news share its per-student state.
"""``WS /ws/student``: binary frames in, one JSON ack per frame and the self-view out.

Text messages both ways are the structs of ``classpulse.socket_messages``: parsed once at the
door, encoded with the structs on the way out.

A binary message is a JPEG frame, or (edge capture: the page ran the face detector) a faces
message with boxes and grey crops (docs/edge-wire.md), told apart by its first bytes. The
gateway never decodes an image: it checks the size, the JPEG markers or the faces message's
layout and values, and the student's rate, hands the bytes to the process-wide frame writer, and
acks when Redis has them. The page keeps a fixed number of frames in flight by waiting for acks,
so nothing queues up anywhere.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import APIRouter, WebSocket
from redis.exceptions import RedisError
from sqlalchemy import bindparam, select
from starlette.concurrency import run_in_threadpool

from app import ingest, students
from app import ws_common as wsc
from app.auth import StudentClaims, TokenError, decode_student_token
from app.deps import Res
from app.hub import DropOldestQueue
from app.presence import publish_presence
from app.ratelimit import TokenBucket
from app.resources import Resources
from app.students import withdraw_student
from classpulse import contracts, edge_wire
from classpulse import socket_messages as sm
from classpulse.db import ClassSession, Student

log = logging.getLogger(__name__)
router = APIRouter()

MAX_PROTOCOL_ERRORS = 50  # consecutive bad control messages before the socket is closed
OUTBOUND_QUEUE = 64  # acks + self-view updates waiting to be sent to this socket


@dataclass(frozen=True, slots=True)
class Admitted:
    """What the socket needs of a student allowed to stream now."""

    id: uuid.UUID
    session_id: uuid.UUID
    display_name: str
    consent_version: str | None


# One statement for the student and their session's end, on a bare connection: the two ORM
# loads it replaces cost ≈ 700 µs of gateway CPU per connect against ≈ 250 (a class of 600
# arriving at once pays it 600 times; bench/load_suite.py's level table holds the connects).
_ADMISSION = (
    select(
        Student.session_id,
        Student.display_name,
        Student.consent_version,
        Student.withdrawn_at,
        ClassSession.id,
        ClassSession.ended_at,
    )
    .outerjoin(ClassSession, ClassSession.id == Student.session_id)
    .where(Student.id == bindparam("student_id"))
)


def _check(res: Resources, claims: StudentClaims) -> tuple[int, str] | Admitted:
    """The student if it may stream now, else a close code and reason."""
    with res.engine.connect() as conn:
        row = conn.execute(_ADMISSION, {"student_id": claims.student_id}).one_or_none()
    if row is None:
        return wsc.UNAUTHORIZED, "unknown student"
    session_id, display_name, consent_version, withdrawn_at, found, ended_at = row
    if session_id != claims.session_id:
        return wsc.FORBIDDEN, "token not valid for this session"
    if withdrawn_at is not None:
        return wsc.FORBIDDEN, "withdrawn"
    if found is None or ended_at is not None:
        return wsc.FORBIDDEN, "session ended"
    return Admitted(claims.student_id, session_id, display_name, consent_version)


class StudentSocket:
    def __init__(self, ws: WebSocket, res: Resources, student: Admitted) -> None:
        self.ws, self.res = ws, res
        self.student_id = str(student.id)
        self.session_id = str(student.session_id)
        self.display_name = student.display_name
        self.bucket = res.frame_limits.bucket(self.student_id)
        # Control messages cost a Redis write and a publish each (camera) or a counter update
        # (stats): a page sends about one a second; a script flooding them is slowed down.
        rate = res.settings.control_messages_per_second
        self.control_bucket = TokenBucket(rate, 4 * rate)
        self.outbound = DropOldestQueue(OUTBOUND_QUEUE)
        self.seq = 0
        self.errors = 0
        # Per-student frame counters, flushed to Redis once a second by the process's FrameFlow.
        self.counts = res.frame_flow.open(self.session_id, self.student_id)
        self.fps_told = res.frame_flow.fps  # the rate this page was last asked to send at
        # The crop size and scale this page was last told (workers publish theirs; a new model
        # can change them while pages are connected: they get a new config message).
        self.crop_told = (res.frame_flow.crop_size, res.frame_flow.crop_scale)
        self.rate_limited_told = 0.0
        self.withdrawn = False
        self.fallbacks: set[str] = set()  # edge-capture fallbacks this page reported (counted once)
        # Declined consent: the student attends (presence only); no frame of theirs is analysed.
        self.analysis = student.consent_version is not None
        # Set by either half to end the socket; the handler sends the close once, after both
        # halves stopped. Closing from inside a half races with the other half's cancellation
        # (Starlette marks the socket closed before the close frame is out).
        self.close_with: tuple[int, str] | None = None
        self.close_code: int | None = None  # the page's close code, when it closed the socket

    def config(self) -> sm.Config:
        s = self.res.settings
        flow = self.res.frame_flow
        self.crop_told = (flow.crop_size, flow.crop_scale)
        # What the page may send: edge capture or frames, the frame size under "off".
        page: dict[str, Any] = ingest.page_config(s.capture_mode)
        return sm.Config(
            fps=self.fps_told,
            max_fps=s.frame_max_fps,
            max_in_flight=s.frames_in_flight,
            **page,
            detector_url=contracts.EDGE_DETECTOR_URL,
            faces_version=edge_wire.VERSION,
            max_faces=s.max_faces,
            detector_score_threshold=s.detector_score_threshold,
            detector_iou_threshold=s.detector_iou_threshold,
            min_face_size=s.min_face_size,
            crop_size=self.crop_told[0],
            crop_scale=self.crop_told[1],
            emotion_mode=self.res.policy.mode,
        )

    async def presence(self, state: str) -> None:
        try:
            await publish_presence(
                self.res.redis, self.session_id, self.student_id, state, self.display_name
            )
        except RedisError as exc:  # the dashboard misses one presence change; frames still flow
            log.warning("student socket: cannot publish presence %s: %s", state, exc)

    # --- frames ---------------------------------------------------------------------------
    def ack(self, seq: int, reason: str | None) -> None:
        metrics = self.res.metrics
        if reason is None:
            metrics.frames_accepted.inc()
            self.counts["accepted"] += 1
            self.push(sm.Ack(seq, True))
        else:
            metrics.dropped(reason).inc()
            self.counts["dropped." + reason] += 1
            self.push(sm.Ack(seq, False, reason))
        flow = self.res.frame_flow
        if (flow.crop_size, flow.crop_scale) != self.crop_told:
            self.push(self.config())
        fps = flow.fps
        if fps != self.fps_told:  # the pipeline is behind (or caught up): tell the page
            self.fps_told = fps
            self.tell_rate(self.res.frame_flow.reason)

    def tell_rate(self, reason: str) -> None:
        """Ask the page to send at ``fps_told`` frames per second (student.js obeys it)."""
        self.push(sm.Rate(self.fps_told, reason))

    def push(self, message: sm.Outgoing) -> None:
        if self.outbound.push(sm.encode(message)):
            self.res.metrics.live_dropped.inc()

    def frame(self, data: bytes) -> None:
        """One binary message: a JPEG frame, or a faces message (it starts with the magic)."""
        self.seq += 1
        seq = self.seq
        faces = edge_wire.is_faces(data)
        kind = "faces" if faces else "frame"
        metrics = self.res.metrics
        metrics.frames_received.inc()
        messages, size = metrics.ingest[kind]  # children bound once (labels() per call is not free)
        messages.inc()
        size.inc(len(data))
        self.counts["received"] += 1
        mode = self.res.policy.mode  # checked against and stamped into the entry
        reason = self.refusal(data)
        if reason is None and not self.bucket.take():
            reason = "rate_limited"
            now = time.monotonic()
            if now - self.rate_limited_told > 2.0:  # over the cap: say so, at most every 2 s
                self.rate_limited_told = now
                self.tell_rate("rate_limited")
        elif reason is None and faces:
            # After the rate limit: packed crops are inflated to be checked (up to n·s·s bytes),
            # work a flood of messages must not buy beyond the student's rate.
            reason = self.faces_refusal(data, mode)
        if reason is None:
            reason = self.res.sink.offer(  # stamped with the policy's current emotion mode
                self.session_id,
                self.student_id,
                seq,
                data,
                mode,
                lambda r: self.ack(seq, r),
                contracts.KIND_FACES if faces else contracts.KIND_FRAME,
            )
            if reason is None:
                return  # acked by the writer once Redis has it
        self.ack(seq, reason)

    def refusal(self, data: bytes) -> str | None:
        """Why a binary message is refused by the cheap checks (before the rate limit), or None:
        consent, then what this deployment and the policy take (app/ingest.py)."""
        if self.withdrawn or not self.analysis:  # consent withdrawn or never given: refused
            return "withdrawn" if self.withdrawn else "no_consent"
        s = self.res.settings
        return ingest.refusal(
            data,
            capture_mode=s.capture_mode,
            emotion_mode=self.res.policy.mode,
            frame_max_bytes=s.frame_max_bytes,
            faces_max=ingest.faces_max_bytes(s.max_faces, self.res.frame_flow.crop_size),
        )

    def faces_refusal(self, data: bytes, mode: str) -> str | None:
        """Why a faces message breaks the wire rules, or None. Crops must have the workers'
        classifier input side, and are refused under ``off``."""
        try:
            edge_wire.check(  # parse's rules and reasons, without building its result
                data,
                max_faces=self.res.settings.max_faces,
                crop_size_expected=self.res.frame_flow.crop_size,
                crops_allowed=mode != "off",
            )
        except edge_wire.WireError as exc:
            return exc.reason
        return None

    # --- control messages -----------------------------------------------------------------
    async def control(self, text: str) -> None:
        if not self.control_bucket.take():
            self.res.metrics.rate_limited.labels("control_message").inc()
            self.protocol_error(
                f"too many control messages: at most {self.control_bucket.rate:g} per second"
            )
            return
        try:
            msg = sm.parse(text)  # the one place a text message is decoded and validated
        except sm.MessageError as exc:
            self.protocol_error(str(exc))
            return
        self.errors = 0
        if isinstance(msg, sm.Camera):
            # Declined consent: no camera to speak of, only attendance.
            on = "present" if msg.state == "on" else "camera_off"
            await self.presence(on if self.analysis else "no_analysis")
        elif isinstance(msg, sm.Ping):
            self.push(sm.Pong())
        elif isinstance(msg, sm.Stats):
            self.stats(msg)
        else:
            await self.withdraw()

    def stats(self, msg: sm.Stats) -> None:
        """Apply a stats message (validated by its struct): frames captured since the last
        report, and what the page says of its capture (the teacher's tile, /metrics)."""
        self.counts["captured"] += msg.captured
        self.res.metrics.frames_captured.inc(msg.captured)
        flow = self.res.frame_flow
        if msg.capture is not None:
            flow.note(self.counts, "capture", msg.capture)
        if msg.detector_ms is not None:
            flow.note(self.counts, "detector_ms", f"{msg.detector_ms:.2f}")
        if msg.fallback is not None:
            flow.note(self.counts, "fallback", msg.fallback)
            if msg.fallback not in self.fallbacks:  # a page falling back, not each report
                self.fallbacks.add(msg.fallback)
                self.res.metrics.capture_fallbacks.labels(msg.fallback).inc()

    def protocol_error(self, message: str) -> None:
        """Tell the page what was wrong; close after too many wrong messages in a row."""
        self.errors += 1
        self.push(sm.Error(message))
        if self.errors >= MAX_PROTOCOL_ERRORS:
            self.close_with = (wsc.POLICY_VIOLATION, "too many protocol errors")

    async def withdraw(self) -> None:
        sid, stid = uuid.UUID(self.session_id), uuid.UUID(self.student_id)

        def record() -> None:
            with self.res.sessionmaker() as db:
                withdraw_student(db, stid, sid)

        await run_in_threadpool(record)
        self.withdrawn = True
        await self.presence("withdrawn")
        self.close_with = (1000, "withdrawn")

    def left_as(self) -> str:
        """The presence a closed socket leaves: ``disconnected`` when the page said goodbye (1000,
        or 1001 as a tab closes or reloads) or the server ended it; else ``reconnecting``: the
        network dropped it (1006, a silent socket) and the page is retrying with backoff."""
        if self.close_with is not None or self.close_code in (1000, 1001):
            return "disconnected"
        return "reconnecting"

    # --- the two halves -------------------------------------------------------------------
    async def receive(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                self.close_code = message.get("code")
                return
            if message.get("bytes") is not None:
                self.frame(message["bytes"])
            elif message.get("text") is not None:
                await self.control(message["text"])
            if self.close_with:
                return  # withdrawn, too many errors

    async def send(self) -> None:
        while True:
            item = await self.outbound.get()
            if isinstance(item, str):  # this socket's own message, already encoded
                await self.ws.send_text(item)
                continue
            try:  # from the hub: about this student or the session
                message = sm.relay(item)
            except sm.MessageError as exc:
                log.warning("student socket: dropping %s", exc)
                continue
            if message is None:  # e.g. the class mix, which is for dashboards
                continue
            await self.ws.send_text(sm.encode(message))
            if isinstance(message, sm.SessionEnded):
                self.close_with = (wsc.FORBIDDEN, "session ended")
                return
            if sm.withdrawal(message):  # e.g. withdrawn through the REST call from another tab
                self.withdrawn = True
                self.close_with = (1000, "withdrawn")
                return


@router.websocket("/ws/student")
async def student_socket(ws: WebSocket, res: Res) -> None:
    if not wsc.origin_allowed(ws, res.settings):
        return await wsc.refuse(ws, wsc.FORBIDDEN, "origin not allowed")
    try:
        claims = decode_student_token(res.settings, wsc.socket_token(ws) or "")
    except TokenError as exc:
        return await wsc.refuse(ws, wsc.UNAUTHORIZED, str(exc))
    checked = await run_in_threadpool(_check, res, claims)
    if not isinstance(checked, Admitted):
        return await wsc.refuse(ws, *checked)
    conn = StudentSocket(ws, res, checked)
    gauge = res.metrics.sockets.labels("student")
    await wsc.accept(ws)
    gauge.inc()
    # One socket per student: a newer one (another tab, a reloaded page) replaces this one.
    scope = anyio.CancelScope()

    def replaced() -> None:
        conn.close_with = (students.REPLACED, students.REPLACED_REASON)
        scope.cancel()

    sockets = students.student_sockets(ws.app)
    held = sockets.open(conn.student_id, replaced)
    try:
        with scope, res.hub.subscribe(conn.session_id, conn.outbound, conn.student_id):
            await res.hub.joined(conn.session_id)
            await ws.send_text(sm.encode(conn.config()))
            await conn.presence("present" if conn.analysis else "no_analysis")
            await wsc.run_pair(conn.receive, conn.send)
    finally:
        sockets.close(held)
        gauge.dec()
        with wsc.shielded(2.0):
            await res.frame_flow.close(conn.counts)
        if not conn.withdrawn and not held.replaced:  # a replacing socket speaks for them
            with wsc.shielded(2.0):
                await conn.presence(conn.left_as())
        with wsc.shielded(2.0):
            await wsc.close(ws, *(conn.close_with or (1000, "")))
