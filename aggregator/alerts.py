# Over 300 lines: the rules (the pure `evaluate`) and the engine that feeds, applies and publishes them are one unit.
"""The alert rule engine, run by the aggregator after each committed batch and once a tick.

State comes from Redis, not this process's memory: the latest emotion update per student
(the snapshot hash every aggregator writes) and the gateway's presence hash. So several
aggregators, or one restarted, judge the same picture; a short per-session lock keeps two
from evaluating one session at once. A condition's first-seen time lives in Redis too
(``cp:alertsince:{session}``); it must hold for the rule's sustain time before an alert opens.
Alerts are rows in ``alerts`` (open until ``ended_at`` is set, at most one open per rule and
student) and messages of type "alert" on the session's live channel, for teachers only.

Wording: every message is a prompt to look ("consider checking in"), never a judgement of a
person. Policy: no emotion rule runs when emotions are off; no rule judges one student's
emotions (only the class share, and only with at least ``min_group_size`` students present).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
import redis
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from classpulse import alert_rules, contracts
from classpulse import policy as org_policy
from classpulse.db import Alert, ClassSession, Student, utcnow
from classpulse.policy import Policy
from records.reports import NEGATIVE, alert_dict

log = logging.getLogger(__name__)

EVALUATE_EVERY_S = 2.0
FRESH_S = 10.0  # an emotion update older than this says nothing about "now"
FORGET_AFTER_S = 3600.0  # a session without results this long is no longer evaluated


def since_key(session_id: str) -> str:
    return f"cp:alertsince:{session_id}"


def lock_key(session_id: str) -> str:
    return f"cp:alertlock:{session_id}"


@dataclass
class StudentNow:
    """What is known about one student at evaluation time."""

    student_id: str
    name: str
    connection: str | None = None  # the gateway's presence: present | camera_off | disconnected
    connection_t: float = 0.0
    update: contracts.LiveUpdate | None = None  # the latest emotion update


@dataclass
class Finding:
    """A rule's condition, true now; it becomes an alert once held for ``sustain_s``."""

    rule: str
    student_id: str | None
    sustain_s: float
    message: str
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.rule}|{self.student_id or ''}"


def evaluate(
    now: float,
    rules: dict[str, dict[str, Any]],
    policy: Policy,
    students: Iterable[StudentNow],
    class_now: contracts.ClassUpdate | None = None,
) -> list[Finding]:
    """The conditions true at ``now`` (pure: tests feed it synthetic states)."""
    findings: list[Finding] = []
    faced, negative = 0, 0
    for s in students:
        u = s.update
        camera_on = s.connection == "present"
        fresh = u is not None and now - u.t <= FRESH_S
        if u is not None and fresh and u.presence == "present" and u.emotion and camera_on:
            faced += 1
            negative += u.emotion in NEGATIVE
        rule = rules["no_face"]
        if rule["enabled"] and camera_on and fresh and u is not None and u.presence == "no_face":
            findings.append(
                Finding(
                    "no_face",
                    s.student_id,
                    rule["sustain_s"],
                    f"No face has been visible in {s.name}'s camera for "
                    f"{alert_rules.minutes(rule['sustain_s'])} while it is on — the camera may "
                    "need adjusting; consider checking in.",
                )
            )
        rule = rules["stalled"]
        # Only a stream that ran: a student who never sent a frame (declined analysis,
        # camera not started yet) is not stalled.
        stall = rule["stall_s"]
        if (
            rule["enabled"]
            and camera_on
            and u is not None
            and now - u.t >= stall
            # a reconnect restarts the clock
            and (s.connection_t <= u.t or now - s.connection_t >= stall)
        ):
            findings.append(
                Finding(
                    "stalled",
                    s.student_id,
                    0,
                    f"No frames have arrived from {s.name}'s camera for "
                    f"{alert_rules.minutes(now - u.t)} although they are connected — their "
                    "connection or device may be struggling.",
                    {"last_frame_t": u.t},
                )
            )
    if class_now is not None and class_now.counts is not None and now - class_now.t <= FRESH_S:
        # Outside per_student mode the aggregator publishes the class's counts instead.
        faced = class_now.present
        negative = sum(class_now.counts.get(k, 0) for k in NEGATIVE)
    rule = rules["negative_share"]
    enough = faced >= max(1, policy.min_group_size)
    if rule["enabled"] and policy.emotions_on and enough and negative / faced > rule["threshold"]:
        findings.append(
            Finding(
                "negative_share",
                None,
                rule["sustain_s"],
                f"{negative} of {faced} students showed negative expressions for "
                f"{alert_rules.minutes(rule['sustain_s'])} — consider checking in.",
                {"negative": negative, "present": faced, "share": round(negative / faced, 3)},
            )
        )
    return findings


class AlertEngine:
    """Evaluates the sessions this aggregator saw results of; opens and closes their alerts."""

    def __init__(self, r: redis.Redis, engine: Engine, name: str) -> None:
        self.r = r
        self.engine = engine
        self.name = name
        self.active: dict[str, float] = {}  # session id -> last time results arrived (epoch)
        self._last = 0.0

    def observe(self, results: Iterable[contracts.FrameResult]) -> None:
        now = time.time()
        for res in results:
            self.active[res.session_id] = now

    def tick(self, now: float | None = None) -> None:
        """Evaluate every active session, at most every EVALUATE_EVERY_S."""
        now = time.time() if now is None else now
        if now - self._last < EVALUATE_EVERY_S:
            return
        self._last = now
        for session_id, seen in list(self.active.items()):
            if now - seen > FORGET_AFTER_S:
                del self.active[session_id]
            try:
                running = self.evaluate_session(session_id, now)
            except IntegrityError as exc:
                # A student (or the session) deleted while its alert was being written: rolled
                # back; the next tick evaluates the session again without them.
                log.warning(
                    "alert rules of session %s: %s; retrying next tick", session_id, exc.orig
                )
                continue
            except (redis.ConnectionError, redis.TimeoutError, OperationalError, DBAPIError):
                raise  # the aggregator's loop backs off and retries
            except Exception:  # a faulty rule must never stop emotion data from being stored
                log.exception("alert rules failed for session %s", session_id)
                continue
            if not running:
                self.active.pop(session_id, None)

    def _state(
        self, session_id: str, roster: list[Student]
    ) -> tuple[list[StudentNow], contracts.ClassUpdate | None]:
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(contracts.snapshot_key(session_id))
        pipe.hgetall(contracts.presence_key(session_id))
        pipe.get(contracts.class_live_key(session_id))
        emotions, presence, class_raw = pipe.execute()
        # State written by another schema version (an aggregator of another release during an
        # upgrade) reads as no state: rules wait for this release's next update, never misread.
        class_now = None
        with contextlib.suppress(msgspec.DecodeError, TypeError):
            class_now = msgspec.json.decode(class_raw, type=contracts.ClassUpdate)
        if class_now is not None and class_now.v != contracts.SCHEMA_VERSION:
            class_now = None
        out = []
        for st in roster:
            s = StudentNow(str(st.id), st.display_name)
            raw = presence.get(s.student_id.encode())
            if raw:
                with contextlib.suppress(msgspec.DecodeError):
                    p = contracts.live_decoder.decode(raw)
                    if p.v == contracts.SCHEMA_VERSION:
                        s.connection, s.connection_t = p.presence, p.t
            raw = emotions.get(s.student_id.encode())
            if raw:
                with contextlib.suppress(msgspec.DecodeError):
                    update = contracts.live_decoder.decode(raw)
                    if update.v == contracts.SCHEMA_VERSION:
                        s.update = update
            out.append(s)
        return out, class_now

    def evaluate_session(self, session_id: str, now: float | None = None) -> bool:
        """Open and close the session's alerts; False once the session is over (or gone)."""
        now = time.time() if now is None else now
        if not self.r.set(lock_key(session_id), self.name, nx=True, px=5000):
            return True  # another aggregator is on it right now
        try:
            with Session(self.engine) as db:
                session = db.get(ClassSession, uuid.UUID(session_id))
                if session is None:
                    return False
                open_alerts = {
                    f"{a.rule}|{a.student_id or ''}": a
                    for a in db.scalars(
                        select(Alert).where(
                            Alert.session_id == session.id, Alert.ended_at.is_(None)
                        )
                    )
                }
                findings: dict[str, Finding] = {}
                if session.ended_at is None:
                    # FOR KEY SHARE: a student deleted meanwhile goes after this commit (with
                    # the alerts written for them), never under an insert that refers to them.
                    roster = db.scalars(
                        select(Student)
                        .where(Student.session_id == session.id, Student.withdrawn_at.is_(None))
                        .order_by(Student.id)
                        .with_for_update(key_share=True)
                    ).all()
                    rules = alert_rules.merged(session.alert_rules)
                    students, class_now = self._state(session_id, list(roster))
                    found = evaluate(now, rules, org_policy.load(db), students, class_now)
                    findings = {f.key: f for f in found}
                changed = self._apply(db, session.id, now, findings, open_alerts)
                messages = [alert_message(session_id, now, state, a) for state, a in changed]
                for state, a in changed:
                    log.info("alert %s %s in session %s", a.rule, state, session_id)
                running = session.ended_at is None
                db.commit()
            self._publish(session_id, messages)
            return running
        finally:
            self.r.delete(lock_key(session_id))

    def _apply(
        self,
        db: Session,
        session_id: uuid.UUID,
        now: float,
        findings: dict[str, Finding],
        open_alerts: dict[str, Alert],
    ) -> list[tuple[str, Alert]]:
        key = since_key(str(session_id))
        since = {
            k.decode() if isinstance(k, bytes) else str(k): float(v)
            for k, v in self.r.hgetall(key).items()
        }
        pipe = self.r.pipeline(transaction=False)
        for k in set(since) - set(findings):
            pipe.hdel(key, k)  # the condition cleared: a new one starts its clock afresh
        changed: list[tuple[str, Alert]] = []
        for k, f in findings.items():
            first = since.get(k)
            if first is None:
                first = now
                pipe.hset(key, k, repr(now))
            if k in open_alerts or now - first < f.sustain_s:
                continue
            alert = Alert(
                session_id=session_id,
                student_id=uuid.UUID(f.student_id) if f.student_id else None,
                rule=f.rule,
                message=f.message,
                started_at=datetime.fromtimestamp(first, UTC),
                detail=f.detail,
            )
            db.add(alert)
            changed.append(("open", alert))
        for k, alert in open_alerts.items():
            if k not in findings:
                alert.ended_at = utcnow()
                changed.append(("closed", alert))
        pipe.expire(key, contracts.STATE_TTL_S)
        pipe.execute()
        db.flush()  # ids for the messages
        return changed

    def _publish(self, session_id: str, messages: list[bytes]) -> None:
        if not messages:
            return
        pipe = self.r.pipeline(transaction=False)
        for data in messages:
            pipe.publish(contracts.live_channel(session_id), data)
        pipe.execute()


def alert_message(session_id: str, now: float, state: str, alert: Alert) -> bytes:
    """The live message. No top-level student_id: the hub would route it to that student's
    page; ``audience`` keeps it off every student page."""
    return contracts.encoder.encode(
        {
            "type": "alert",
            "audience": "teachers",
            "session_id": session_id,
            "t": now,
            "state": state,
            "alert": alert_dict(alert),
        }
    )
