"""The organisation's privacy policy: what is inferred and kept (README, "Privacy policy modes").

PostgreSQL holds it (table ``org_policy``, one row); admins change it through the API. Gateways,
workers and the aggregator read it often, so it is mirrored to a Redis hash (``POLICY_KEY``):
the gateway writes the mirror at start-up and on every change, and re-writes it from PostgreSQL
when it finds it gone (a Redis restart). The worker has no database: without a mirror it obeys
the mode the gateway stamped into each frame.

Each stage applies the *stricter* of the mode stamped upstream and the mode it reads itself, so
tightening the policy (per_student → aggregate_only → off) holds from the next batch on in every
process, whatever the caches upstream still believe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from classpulse.contracts import POLICY_KEY

if TYPE_CHECKING:  # the worker imports this module and has no database: no SQLAlchemy there
    from sqlalchemy.orm import Session

EmotionMode = Literal["per_student", "aggregate_only", "off"]
EMOTION_MODES: tuple[str, ...] = get_args(EmotionMode)
# Higher is stricter: what a stage keeps when two sources disagree.
_RANK = {"per_student": 0, "aggregate_only": 1, "off": 2}
MAX_GROUP_SIZE = 1000
MAX_RETENTION_DAYS = 3650


class PolicyError(ValueError):
    """A policy value out of range; the message says which and why."""


@dataclass(frozen=True)
class Policy:
    # per_student: emotions per student are shown and kept; aggregate_only: class-level only, and
    # nothing shown below min_group_size present; off: no emotion model runs, presence only.
    emotion_mode: EmotionMode = "per_student"
    min_group_size: int = 5
    retention_days: int = 30
    # Head orientation ("facing the screen", docs/attention.md): observed only when on, whatever
    # the emotion mode (a school may run "off" with attention on). Off unless an admin turns it on.
    attention: bool = False

    @property
    def emotions_on(self) -> bool:
        return self.emotion_mode != "off"

    @property
    def per_student(self) -> bool:
        return self.emotion_mode == "per_student"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> Policy:
        if self.emotion_mode not in EMOTION_MODES:
            raise PolicyError(f"emotion_mode must be one of {', '.join(EMOTION_MODES)}")
        if not 1 <= self.min_group_size <= MAX_GROUP_SIZE:
            raise PolicyError(f"min_group_size must be between 1 and {MAX_GROUP_SIZE}")
        if not 1 <= self.retention_days <= MAX_RETENTION_DAYS:
            raise PolicyError(f"retention_days must be between 1 and {MAX_RETENTION_DAYS}")
        if not isinstance(self.attention, bool):  # "0" would read as on
            raise PolicyError("attention must be true or false")
        return self

    # --- the Redis mirror (a hash of strings, plus the policy's "version") ----------------------
    @classmethod
    def from_redis(cls, raw: Mapping[Any, Any]) -> Policy | None:
        """The mirrored policy, or None when the hash is missing or unreadable."""
        fields = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
        try:
            mode = fields["emotion_mode"]
            policy = cls(
                mode.decode() if isinstance(mode, bytes) else mode,  # type: ignore[arg-type]
                int(fields["min_group_size"]),
                int(fields["retention_days"]),
                # A mirror written by a release before the switch has no field: off.
                fields.get("attention") in (b"1", "1"),
            )
            return policy.validate()
        except (KeyError, ValueError, UnicodeDecodeError):
            return None


def stricter(a: str | None, b: str | None) -> str:
    """The stricter of two emotion modes; unknown or missing values count as ``off``."""
    ra = _RANK.get(a or "off", 2)
    rb = _RANK.get(b or "off", 2)
    return EMOTION_MODES[max(ra, rb)]


def load(db: Session) -> Policy:
    return load_stamped(db)[0]


def load_stamped(db: Session) -> tuple[Policy, int]:
    """The policy and its stamp for the mirror: the row's ``version``, which every save
    increments in SQL. Not a clock: a gateway whose clock runs fast, or steps back, must not make
    a later save look older than an earlier one."""
    from classpulse.db import OrgPolicy

    row = db.get(OrgPolicy, 1)
    if row is None:  # the migration inserts it; a hand-emptied table falls back to the defaults
        return Policy(), 0
    policy = Policy(
        row.emotion_mode,  # type: ignore[arg-type]
        row.min_group_size,
        row.retention_days,
        bool(row.attention),
    )
    return policy, int(row.version or 0)


def save(db: Session, policy: Policy, actor_id: int | None) -> int:
    """Store the policy; return its new version, the stamp to mirror it with (the caller
    commits, together with its audit entry).

    The version is incremented by the UPDATE itself (``version = version + 1``), which holds
    the row's lock until the commit: two saves, even from gateways with different clocks, get
    increasing versions in the order they commit."""
    from classpulse.db import OrgPolicy, utcnow

    policy.validate()
    row = db.get(OrgPolicy, 1)
    if row is None:  # the migration inserts it; a hand-emptied table gets it back (version 1)
        from sqlalchemy.dialects.postgresql import insert

        db.execute(insert(OrgPolicy).values(id=1, version=0).on_conflict_do_nothing())
        row = db.get(OrgPolicy, 1, populate_existing=True)
        assert row is not None
    row.version = OrgPolicy.version + 1
    row.emotion_mode = policy.emotion_mode
    row.min_group_size = policy.min_group_size
    row.retention_days = policy.retention_days
    row.attention = policy.attention
    row.updated_at = utcnow()
    row.updated_by_id = actor_id
    db.flush()  # the UPDATE runs (and locks the row) now; reading version re-selects it
    return int(row.version)


def read_mirror(r: Any) -> Policy | None:
    """The mirrored policy from a sync Redis client, or None when there is none."""
    return Policy.from_redis(r.hgetall(POLICY_KEY))


# Writes the mirror unless it already holds a newer policy: a process that read PostgreSQL just
# before an admin's change must not put the old policy back over the new one. Newer means a
# higher ``version`` (org_policy.version). ``stamp`` is where releases before the version column
# kept a wall-clock stamp in microseconds: ignored here, and set to the highest stamp those
# releases can compare so that a gateway of such a release, still running during an upgrade,
# never writes an older policy over this one.
MIRROR_SCRIPT = """
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '-1')
if current > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'emotion_mode', ARGV[2],
           'min_group_size', ARGV[3], 'retention_days', ARGV[4], 'attention', ARGV[5],
           'stamp', '9007199254740991')
return 1
"""


def mirror_args(policy: Policy, stamp: int) -> list[str]:
    return [
        str(stamp),
        policy.emotion_mode,
        str(policy.min_group_size),
        str(policy.retention_days),
        "1" if policy.attention else "0",
    ]


def write_mirror(r: Any, policy: Policy, stamp: int) -> bool:
    """Mirror the policy with a sync client unless a newer one is there; True if written."""
    return bool(r.eval(MIRROR_SCRIPT, 1, POLICY_KEY, *mirror_args(policy, stamp)))
