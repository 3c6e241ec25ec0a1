"""What happens to a student that more than one endpoint does: withdrawal (the REST call and
the socket message)."""

from __future__ import annotations

import uuid

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
