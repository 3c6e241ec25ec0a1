"""What a view may show under the organisation's policy: the privacy rule on the way out, once.

Every place that shows or sends emotion data asks here: the aggregator before it publishes a
live update, the gateway's live hub before it fans one out to dashboards and student pages
(snapshot, ``self`` messages), and every read route (timeline, history, reports, exports, the
student's own view). Pages display what they are given and hide nothing themselves.

| mode | a student's estimate (live, snapshot, self, timeline, history, report rows) | the class's mix of a bucket |
|---|---|---|
| ``per_student`` | shown | shown |
| ``aggregate_only`` | withheld: presence and frame counts only | shown while at least ``min_group_size`` students showed a face |
| ``off`` | withheld | withheld |

Reads apply the mode in force now, so estimates stored under an earlier, looser policy are not
shown under a stricter one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from classpulse.contracts import EMOTION_FIELDS, LiveUpdate, encoder
from classpulse.policy import Policy

# Per view, the fields that carry a student's emotion estimate and what they read when withheld
# (each view keeps its JSON shape: a withheld ``probs`` is ``{}`` where the field is always a
# mapping, ``None`` where it may be missing).
WITHHELD: dict[str, dict[str, Any]] = {
    # A live update (LiveUpdate), as published, kept for late dashboards and relayed to the
    # student as ``self``; ``quality`` says why an estimate is uncertain: about it too.
    "update": dict.fromkeys(EMOTION_FIELDS),
    # One student's stored bucket on the timeline.
    "timeline": {"probs": {}, "dominant": None},
    # One stored bucket as a history or report row, and a bucket of the student's own view.
    "bucket": {"probs": None, "dominant": None},
    # The student's own view: their mean over the session.
    "self": {"probs": None},
}
# Every field name that carries an estimate in some view (what the tests look for).
ESTIMATE_FIELDS = frozenset(k for fields in WITHHELD.values() for k in fields)

Mode = Policy | str | None


def _mode(policy: Mode) -> str:
    return policy.emotion_mode if isinstance(policy, Policy) else (policy or "off")


def shows_students(policy: Mode) -> bool:
    """Whether a student's own emotion estimate may be shown (and so kept): ``per_student``."""
    return _mode(policy) == "per_student"


def shows_class(policy: Policy, students_present: int) -> bool:
    """Whether the class's mix of a bucket (or a moment) where ``students_present`` students
    showed a face may be shown: emotions on and, outside ``per_student``, a big enough group."""
    if not policy.emotions_on:
        return False
    return policy.per_student or students_present >= policy.min_group_size


def class_min_group(policy: Policy) -> int:
    """The fewest students present for a class mix to be shown (emotions on)."""
    return 0 if policy.per_student else policy.min_group_size


def student_view(view: str, data: dict[str, Any], policy: Mode) -> dict[str, Any]:
    """``data`` (one student's fields as view ``view`` shows them) as the policy allows."""
    if shows_students(policy):
        return data
    return {
        **data,
        **{k: (v.copy() if isinstance(v, dict) else v) for k, v in WITHHELD[view].items()},
    }


def update_view(update: dict[str, Any] | None, policy: Mode) -> dict[str, Any] | None:
    """A live update (as a dict, e.g. from the snapshot hash) as the policy allows it."""
    return None if update is None else student_view("update", update, policy)


def redact_update(update: LiveUpdate, policy: Mode) -> LiveUpdate:
    """The per-student update as the policy allows it to leave the aggregator (in place)."""
    if not shows_students(policy):
        for name in EMOTION_FIELDS:
            setattr(update, name, None)
    return update


def carries_estimate(msg: Mapping[str, Any]) -> bool:
    """Whether a live message shows a student's emotion estimate."""
    return msg.get("type") == "student" and any(msg.get(f) for f in EMOTION_FIELDS)


# What a live message holding an estimate has in it (msgspec writes no spaces): the cheap test
# that spares decoding the many updates that hold none.
_ESTIMATE_HINT = re.compile(rb'"(?:emotion|quality)":"|"probs":\{|"confidence":[-0-9]')


def may_carry_estimate(data: bytes) -> bool:
    """False for a live message that surely holds no estimate (without decoding it)."""
    return _ESTIMATE_HINT.search(data) is not None


def live_message(data: bytes, policy: Mode) -> bytes:
    """A message of a session's live channel as the policy allows it to reach a socket: a
    student's update carrying an estimate outside ``per_student`` (published before a policy
    change, or by an aggregator that had not seen it yet) goes out without it."""
    if shows_students(policy) or not may_carry_estimate(data):
        return data
    try:
        msg = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return data
    if not isinstance(msg, dict) or not carries_estimate(msg):
        return data
    return encoder.encode(update_view(msg, policy))
