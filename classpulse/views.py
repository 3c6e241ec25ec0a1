"""What a view may show under the organisation's policy: the privacy rule on the way out, once.

Every place that shows or sends emotion data asks here: the aggregator before it publishes a
live update, the gateway's live hub before it fans one out to dashboards and student pages
(snapshot, ``self`` messages), and every read route (history, reports, exports, the
student's own view). Pages display what they are given and hide nothing themselves.

| mode | a student's estimate (live, snapshot, self, history, report rows) | the class's mix of a bucket |
|---|---|---|
| ``per_student`` | shown | shown |
| ``aggregate_only`` | withheld: presence and frame counts only | shown while at least ``min_group_size`` students showed a face |
| ``off`` | withheld | withheld |

Attention (head orientation, "facing the screen", docs/attention.md) has its own switch,
``Policy.attention``, independent of the mode: its fields (``ATTENTION_KEYS``, live and stored)
are shown in every view while it is on, whatever the mode (``off`` included: no emotion, but
whether a student faces the screen), and withheld in every view while it is off. Only a
``Policy`` can say it is on: a bare mode string means attention off.

Reads apply the policy in force now, so data stored under an earlier, looser policy is not
shown under a stricter one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from classpulse.contracts import ATTENTION_FIELDS, EMOTION_FIELDS, LiveUpdate, encoder
from classpulse.policy import Policy

# Per view, the fields that carry a student's emotion estimate and what they read when withheld
# (each view keeps its JSON shape: a withheld field reads ``None``, as where it may be missing).
WITHHELD: dict[str, dict[str, Any]] = {
    # A live update (LiveUpdate), as published, kept for late dashboards and relayed to the
    # student as ``self``; ``quality`` says why an estimate is uncertain: about it too.
    "update": dict.fromkeys(EMOTION_FIELDS),
    # One stored bucket as a history or report row, and a bucket of the student's own view.
    "bucket": {"probs": None, "dominant": None},
    # The student's own view: their mean over the session.
    "self": {"probs": None},
}
# Every field name that carries an estimate in some view (what the tests look for).
ESTIMATE_FIELDS = frozenset(k for fields in WITHHELD.values() for k in fields)

# The stored attention figures of a bucket (history, report and export rows, the summary).
ATTENTION_STORED = ("attention_frames", "facing_frames", "facing_share")
# Every field name that carries attention in some view, live or stored (what the tests look for).
ATTENTION_KEYS = frozenset((*ATTENTION_FIELDS, *ATTENTION_STORED))

Mode = Policy | str | None


def _mode(policy: Mode) -> str:
    return policy.emotion_mode if isinstance(policy, Policy) else (policy or "off")


def shows_students(policy: Mode) -> bool:
    """Whether a student's own emotion estimate may be shown (and so kept): ``per_student``."""
    return _mode(policy) == "per_student"


def shows_attention(policy: Mode) -> bool:
    """Whether attention (live and stored) may be shown, and so kept: the switch is on. A bare
    mode cannot say so: attention off."""
    return isinstance(policy, Policy) and policy.attention


def shows_student_data(policy: Mode) -> bool:
    """Whether anything per student beyond presence may be shown: estimates (``per_student``)
    or attention. What the live view audits and the per-student history serves."""
    return shows_students(policy) or shows_attention(policy)


def shows_class(policy: Policy, students_present: int) -> bool:
    """Whether the class's mix of a bucket (or a moment) where ``students_present`` students
    showed a face may be shown: emotions on and, outside ``per_student``, a big enough group."""
    if not policy.emotions_on:
        return False
    return policy.per_student or students_present >= policy.min_group_size


def class_min_group(policy: Policy) -> int:
    """The fewest students present for a class mix to be shown (emotions on)."""
    return 0 if policy.per_student else policy.min_group_size


def attention_view(data: dict[str, Any], policy: Mode) -> dict[str, Any]:
    """``data`` (a student's or the class's fields in any view) with its attention fields read
    as None unless the policy observes attention; ``data`` itself when nothing is withheld."""
    if shows_attention(policy):
        return data
    hidden = [k for k in ATTENTION_KEYS if data.get(k) is not None]
    return {**data, **dict.fromkeys(hidden)} if hidden else data


def student_view(view: str, data: dict[str, Any], policy: Mode) -> dict[str, Any]:
    """``data`` (one student's fields as view ``view`` shows them) as the policy allows."""
    data = attention_view(data, policy)
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
    if not shows_attention(policy):
        for name in ATTENTION_FIELDS:
            setattr(update, name, None)
    return update


def carries_estimate(msg: Mapping[str, Any]) -> bool:
    """Whether a live message shows a student's emotion estimate."""
    return msg.get("type") == "student" and any(msg.get(f) for f in EMOTION_FIELDS)


def carries_attention(msg: Mapping[str, Any]) -> bool:
    """Whether a live message shows attention (``facing`` False is an observation too)."""
    return any(msg.get(f) is not None for f in ATTENTION_FIELDS)


# What a live message holding an estimate has in it (msgspec writes no spaces): the cheap test
# that spares decoding the many updates that hold none.
_ESTIMATE_HINT = re.compile(rb'"(?:emotion|quality)":"|"probs":\{|"confidence":[-0-9]')


def may_carry_estimate(data: bytes) -> bool:
    """False for a live message that surely holds no estimate (without decoding it)."""
    return _ESTIMATE_HINT.search(data) is not None


# The same for attention: a field holding a boolean or a number.
_ATTENTION_HINT = re.compile(rb'"(?:facing|facing_share|away_s)":[-0-9tf]')


def may_carry_attention(data: bytes) -> bool:
    """False for a live message that surely holds no attention field (without decoding it)."""
    return _ATTENTION_HINT.search(data) is not None


def json_object(data: bytes) -> dict[str, Any] | None:
    """A live message as a JSON object, or None when it is not one (not ours to judge)."""
    try:
        msg = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return None
    return msg if isinstance(msg, dict) else None


def live_message(data: bytes, policy: Mode) -> bytes:
    """A message of a session's live channel as the policy allows it to reach a socket: a
    student's update carrying an estimate outside ``per_student``, or attention while the
    switch is off (published before a policy change, or by an aggregator that had not seen it
    yet) goes out without it."""
    estimates = not shows_students(policy) and may_carry_estimate(data)
    attention = not shows_attention(policy) and may_carry_attention(data)
    if not (estimates or attention):
        return data
    msg = json_object(data)
    if msg is None:
        return data
    if not ((estimates and carries_estimate(msg)) or (attention and carries_attention(msg))):
        return data
    return encoder.encode(update_view(msg, policy))
