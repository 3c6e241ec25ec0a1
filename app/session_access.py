"""Who may see which class session: the owner and admins. Every session route and the live
socket ask here, and answer "not found" for a session that is not the caller's, exactly as for
one that does not exist (no existence oracle)."""

from __future__ import annotations

import uuid

from fastapi import HTTPException, status
from sqlalchemy.orm import Session

from classpulse.db import ClassSession, User


def find_session(db: Session, session_id: str | uuid.UUID) -> ClassSession | None:
    try:
        return db.get(ClassSession, uuid.UUID(str(session_id)))
    except ValueError:
        return None


def can_watch(user: User, session: ClassSession) -> bool:
    return user.role == "admin" or session.owner_id == user.id


def visible_session(db: Session, user: User, session_id: str) -> ClassSession:
    """The session if the caller may see it; 404 otherwise, so others' sessions don't leak."""
    session = find_session(db, session_id)
    if session is None or not can_watch(user, session):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "session not found")
    return session
