"""What happens to a student that more than one endpoint does: withdrawal (the REST call and
the socket message), and the one open socket per student."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from classpulse.db import ConsentRecord, Student, utcnow


def withdraw_student(db: Session, student_id: uuid.UUID, session_id: uuid.UUID) -> Student | None:
    """Record the withdrawal (first time only, with a consent record); None if the token's
    student is unknown. From this commit on the aggregator stores nothing more of theirs."""
    student = db.get(Student, student_id, with_for_update=True)
    if student is None or student.session_id != session_id:
        return None
    if student.withdrawn_at is None:
        student.withdrawn_at = utcnow()
        db.add(
            ConsentRecord(
                session_id=session_id,
                student_id=student_id,
                action="withdrawn",
                consent_version=student.consent_version,
                at=student.withdrawn_at,
            )
        )
    db.commit()
    return student


# A student's socket replaced by a newer one of the same student (another tab, a reloaded page
# whose old socket had not closed yet): closed with this code, and the page stops instead of
# reconnecting (student.js), or two tabs would take the class from each other forever.
REPLACED = 4409
REPLACED_REASON = "replaced: this class is open in another tab or window"


class HeldSocket:
    """One student socket in ``StudentSockets``; ``replaced`` once a newer one took over."""

    def __init__(self, student_id: str, on_replaced: Callable[[], None]) -> None:
        self.student_id = student_id
        self.on_replaced = on_replaced
        self.replaced = False


class StudentSockets:
    """The open student sockets of this gateway: one per student. A newer socket replaces the
    older one rather than being refused: a page that reloads, or reconnects after the network
    dropped, opens its new socket while the server may still hold the old one (a half-open
    socket lives until its ping times out); refusing would lock the student out until then. The
    replaced socket is closed with ``REPLACED``, and leaves no presence change behind (the newer
    socket speaks for the student)."""

    def __init__(self) -> None:
        self._open: dict[str, HeldSocket] = {}

    def open(self, student_id: str, on_replaced: Callable[[], None]) -> HeldSocket:
        held = HeldSocket(student_id, on_replaced)
        older = self._open.get(student_id)
        self._open[student_id] = held
        if older is not None:
            older.replaced = True
            older.on_replaced()
        return held

    def close(self, held: HeldSocket) -> None:
        if self._open.get(held.student_id) is held:
            del self._open[held.student_id]

    def __len__(self) -> int:
        return len(self._open)


def student_sockets(app: Any) -> StudentSockets:
    """The gateway's registry (one per app, kept on ``app.state``)."""
    registry = getattr(app.state, "student_sockets", None)
    if registry is None:
        registry = app.state.student_sockets = StudentSockets()
    return registry
