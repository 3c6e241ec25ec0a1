"""The audit log: every view of per-student data, every export and every policy change.

Callers add the entry in the same database transaction as the change it records (policy
updates), or just before returning the data (views, exports), so an export without an audit
entry cannot happen.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from classpulse.db import AuditEntry, User


def record(
    db: Session,
    actor: User | None,
    action: str,
    target_type: str = "",
    target_id: object | None = None,
    detail: dict[str, Any] | None = None,
    ip: str | None = None,
) -> AuditEntry:
    """Add an audit entry to ``db`` (the caller commits). ``action`` is dotted, e.g.
    ``view.live``, ``view.history``, ``export.report``, ``policy.update``, ``delete.student``."""
    entry = AuditEntry(
        actor_id=actor.id if actor is not None else None,
        actor_email=actor.email if actor is not None else "",
        action=action,
        target_type=target_type,
        target_id=None if target_id is None else str(target_id),
        detail=detail or {},
        ip=ip,
    )
    db.add(entry)
    return entry
