"""The organisation's privacy policy: what is inferred and kept (see DESIGN.md, "Privacy by design").

PostgreSQL holds it (table ``org_policy``, one row); admins change it through the API. Gateways,
workers and the aggregator read it often, so it is mirrored to a Redis hash as well.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, get_args

from sqlalchemy.orm import Session

from classpulse.db import OrgPolicy, utcnow

EmotionMode = Literal["per_student", "aggregate_only", "off"]
EMOTION_MODES: tuple[str, ...] = get_args(EmotionMode)


@dataclass(frozen=True)
class Policy:
    # per_student: emotions per student are shown and kept; aggregate_only: class-level only, and
    # nothing shown below min_group_size present; off: no emotion model runs, presence only.
    emotion_mode: EmotionMode = "per_student"
    min_group_size: int = 5
    retention_days: int = 30

    @property
    def emotions_on(self) -> bool:
        return self.emotion_mode != "off"

    @property
    def per_student(self) -> bool:
        return self.emotion_mode == "per_student"

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def load(db: Session) -> Policy:
    row = db.get(OrgPolicy, 1)
    if row is None:  # the migration inserts it; a hand-emptied table falls back to the defaults
        return Policy()
    return Policy(row.emotion_mode, row.min_group_size, row.retention_days)  # type: ignore[arg-type]


def save(db: Session, policy: Policy, actor_id: int | None) -> Policy:
    """Store the policy (the caller commits, together with its audit entry)."""
    if policy.emotion_mode not in EMOTION_MODES:
        raise ValueError(f"emotion_mode must be one of {', '.join(EMOTION_MODES)}")
    row = db.get(OrgPolicy, 1)
    if row is None:
        row = OrgPolicy(id=1)
        db.add(row)
    row.emotion_mode = policy.emotion_mode
    row.min_group_size = policy.min_group_size
    row.retention_days = policy.retention_days
    row.updated_at = utcnow()
    row.updated_by_id = actor_id
    return policy
