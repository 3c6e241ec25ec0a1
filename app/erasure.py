"""Erasure on request: one student's data, or one session's students' data, deleted with an
audit entry that says what went (the entry itself stays: it is the record of the erasure), and
the live copies in Redis forgotten, the students' open sockets closed."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.presence import publish_session_ended
from classpulse import audit, contracts
from classpulse.db import (
    Alert,
    ClassBucket,
    ClassSession,
    ConsentRecord,
    EmotionBucket,
    Student,
    User,
    utcnow,
)


class NotFound(LookupError):
    """Nothing to erase: no such student or session."""


def _count(db: Session, model: Any, *where: Any) -> int:
    return db.scalar(select(func.count()).select_from(model).where(*where)) or 0


# Deletes from one frames stream (KEYS[1]) and its results stream (KEYS[2]) every entry of the
# given students (ARGV[5..]) of one session (ARGV[1]): frames by their session and student fields
# (named by ARGV[2] and ARGV[3]), results by their data field (ARGV[4]) holding the student's id (a
# UUID appears in no other student's result). Entries are read in pages of 500 so a long stream
# never blocks Redis in one call.
PURGE_STUDENTS_SCRIPT = """
local session, f_session, f_student, f_data = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local wanted, removed = {}, 0
for i = 5, #ARGV do wanted[ARGV[i]] = true end
local function sweep(key, match)
  local start = '-'
  while true do
    local page = redis.call('XRANGE', key, start, '+', 'COUNT', 500)
    if #page == 0 then return end
    local doomed = {}
    for _, e in ipairs(page) do
      if match(e[2]) then doomed[#doomed + 1] = e[1] end
    end
    if #doomed > 0 then removed = removed + redis.call('XDEL', key, unpack(doomed)) end
    if #page < 500 then return end
    start = '(' .. page[#page][1]
  end
end
sweep(KEYS[1], function(f)
  local s, u
  for i = 1, #f, 2 do
    if f[i] == f_session then s = f[i + 1] elseif f[i] == f_student then u = f[i + 1] end
  end
  return s == session and u ~= nil and wanted[u] == true
end)
sweep(KEYS[2], function(f)
  for i = 1, #f, 2 do
    if f[i] == f_data then
      for id in pairs(wanted) do
        if string.find(f[i + 1], id, 1, true) then return true end
      end
    end
  end
  return false
end)
return removed
"""


async def purge_streams(redis: Redis, session_id: str, student_ids: list[str], shards: int) -> int:
    """Delete whatever of these students is still in the frames and results streams (frames not
    yet analysed, results not yet trimmed): erasure leaves nothing of them in Redis. Returns how
    many entries went."""
    if not student_ids:
        return 0
    shard = contracts.shard_of(session_id, shards)
    keys = [contracts.frames_stream(shard, shards), contracts.results_stream(shard, shards)]
    fields: list[bytes | str] = [contracts.F_SESSION, contracts.F_STUDENT, contracts.R_DATA]
    args = [session_id, *fields, *student_ids]
    return int(await redis.eval(PURGE_STUDENTS_SCRIPT, 2, *keys, *args))


async def forget_live(redis: Redis, session_id: str, student_ids: list[str], shards: int) -> None:
    """Close the students' sockets, drop what Redis keeps about them for dashboards, and delete
    their entries still in the streams."""
    await purge_streams(redis, session_id, student_ids, shards)
    async with redis.pipeline(transaction=False) as pipe:
        for sid in student_ids:
            notice = contracts.LiveUpdate(
                type="presence",
                session_id=session_id,
                student_id=sid,
                t=utcnow().timestamp(),
                presence="withdrawn",
            )
            pipe.publish(contracts.live_channel(session_id), contracts.encoder.encode(notice))
            pipe.hdel(contracts.snapshot_key(session_id), sid)
            pipe.hdel(contracts.presence_key(session_id), sid)
            # As after a withdrawal: workers drop their frames still queued, and the aggregator
            # does not show their results still in flight (it shows before it stores).
            pipe.set(contracts.withdrawn_key(sid), session_id, ex=contracts.STATE_TTL_S)
        await pipe.execute()
    stats_key = contracts.stream_stats_key(session_id)
    fields = [
        f
        async for f in redis.hscan_iter(stats_key)
        if f[0].split(b":", 1)[0].decode(errors="replace") in student_ids
    ]
    if fields:
        await redis.hdel(stats_key, *[f[0] for f in fields])


def erase_student(
    db: Session, actor: User, student_id: uuid.UUID, ip: str | None
) -> dict[str, Any]:
    """Delete all data of one student (name, consent records, buckets, alerts), audited."""
    student = db.get(Student, student_id)
    if student is None:
        raise NotFound("student not found")
    session_id = student.session_id
    # By (session_id, student_id): the buckets' primary key starts with the session.
    mine = (EmotionBucket.session_id == session_id, EmotionBucket.student_id == student_id)
    counts = {
        "emotion_buckets": _count(db, EmotionBucket, *mine),
        "consent_records": _count(db, ConsentRecord, ConsentRecord.student_id == student_id),
        "alerts": _count(db, Alert, Alert.student_id == student_id),
    }
    db.delete(student)  # the rows above go with it (ON DELETE CASCADE)
    audit.record(
        db,
        actor,
        "delete.student",
        "student",
        student_id,
        {"session_id": str(session_id), **counts},
        ip,
    )
    db.commit()
    return {"student_id": str(student_id), "session_id": str(session_id), "deleted": counts}


def erase_session_data(
    db: Session, actor: User, session_id: uuid.UUID, ip: str | None
) -> tuple[dict[str, Any], list[str], bool]:
    """Delete all data of a session's students (names, consent records, buckets, class buckets,
    alerts), audited; the session stays listed, ended. Returns the answer, the students' ids and
    whether the session was live."""
    session = db.get(ClassSession, session_id)
    if session is None:
        raise NotFound("session not found")
    sid = ClassSession.id == session_id
    students = [
        str(s) for s in db.scalars(select(Student.id).where(Student.session_id == session_id))
    ]
    counts = {
        "students": len(students),
        "emotion_buckets": _count(db, EmotionBucket, EmotionBucket.session_id == session_id),
        "class_buckets": _count(db, ClassBucket, ClassBucket.session_id == session_id),
        "consent_records": _count(db, ConsentRecord, ConsentRecord.session_id == session_id),
        "alerts": _count(db, Alert, Alert.session_id == session_id),
    }
    for model in (Alert, ClassBucket, EmotionBucket, ConsentRecord, Student):
        db.execute(delete(model).where(model.session_id == session_id))
    was_live = db.scalar(select(ClassSession.ended_at).where(sid)) is None
    if was_live:  # its students are gone: no one may stream into it any more
        session.ended_at = utcnow()
    audit.record(db, actor, "delete.session_data", "session", session_id, counts, ip)
    db.commit()
    return {"session_id": str(session_id), "deleted": counts}, students, was_live


async def forget_session(
    redis: Redis, session_id: str, students: list[str], was_live: bool, shards: int
) -> None:
    """After erase_session_data: end the live session and drop its live copies."""
    with contextlib.suppress(RedisError):  # live copies expire within a day; the rows are gone
        if was_live:
            await publish_session_ended(redis, session_id)
        await forget_live(redis, session_id, students, shards)
        await redis.delete(
            contracts.snapshot_key(session_id),
            contracts.presence_key(session_id),
            contracts.class_live_key(session_id),
            contracts.stream_stats_key(session_id),
        )
