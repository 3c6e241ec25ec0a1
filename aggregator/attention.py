"""A student's attention in the aggregator: whether the latest face faces the screen, the share of
observed frames facing it over the last ``ATTENTION_WINDOW_S``, and how long they have looked
away (docs/attention.md). Raw observations of head orientation, never a score of a person.

Memory is bounded per student: one counter pair per second of the window in a ring (two small
integer arrays), with running totals, so a result costs O(1) (plus clearing the seconds the
stream skipped, at most the window once). Time is the frame's receive time, not the clock at
folding: a backlog folded late still lands in the seconds it was taken.
"""

from __future__ import annotations

from array import array

from classpulse import contracts as c
from classpulse.head_pose import facing

SLOTS = int(c.ATTENTION_WINDOW_S)  # one slot per second of the window
DIGITS = 3  # the share as published


def observed(face: c.Face | None) -> bool | None:
    """Whether ``face`` faces the screen; None when its orientation was not observed (no face,
    attention off for the frame, or an old worker)."""
    if face is None or face.yaw is None or face.pitch is None:
        return None
    return facing(face.yaw, face.pitch)


class AttentionState:
    """One student's observations of the last ``ATTENTION_WINDOW_S`` seconds."""

    __slots__ = ("_facing", "_last_facing_ms", "_latest_s", "_seen", "away_since_ms", "n_f", "n")

    def __init__(self) -> None:
        self._seen = array("H", bytes(2 * SLOTS))  # observed frames per second of the ring
        self._facing = array("H", bytes(2 * SLOTS))  # of those, facing the screen
        self.n = 0  # observed frames in the window (the sum of _seen)
        self.n_f = 0  # facing frames in the window
        self._latest_s = -1  # the newest second the ring holds
        self._last_facing_ms: float | None = None
        self.away_since_ms: float | None = None  # last faced (or first seen away), while away

    def _advance(self, second: int) -> None:
        """Move the ring's head to ``second``, emptying the seconds that fell out of the window."""
        if self._latest_s < 0 or second - self._latest_s >= SLOTS:
            for i in range(SLOTS):
                self._seen[i] = self._facing[i] = 0
            self.n = self.n_f = 0
        else:
            for s in range(self._latest_s + 1, second + 1):
                i = s % SLOTS
                self.n -= self._seen[i]
                self.n_f -= self._facing[i]
                self._seen[i] = self._facing[i] = 0
        self._latest_s = second

    def add(self, faces: bool, received_ms: float) -> None:
        """One observed frame."""
        second = int(received_ms // 1000)
        if second > self._latest_s:
            self._advance(second)
        elif self._latest_s - second >= SLOTS:
            return  # older than the window (a late replay): nothing to count
        i = second % SLOTS
        if self._seen[i] < 0xFFFF:  # a counter never wraps (far beyond any frame rate)
            self._seen[i] += 1
            self.n += 1
            if faces:
                self._facing[i] += 1
                self.n_f += 1
        if faces:
            self._last_facing_ms = max(self._last_facing_ms or 0.0, received_ms)
            self.away_since_ms = None
        elif self.away_since_ms is None:
            self.away_since_ms = self._last_facing_ms or received_ms

    def share(self, now_ms: float) -> float | None:
        """Share of the window's observed frames facing the screen; None without any."""
        second = int(now_ms // 1000)
        if second > self._latest_s:
            self._advance(second)
        return round(self.n_f / self.n, DIGITS) if self.n else None

    def fill(self, update: c.LiveUpdate, faces: bool | None, received_ms: float) -> None:
        """Set the update's attention fields for a frame observed as ``faces`` (None: not
        observed; the window's share still stands)."""
        if faces is not None:
            self.add(faces, received_ms)
        update.facing = faces
        update.facing_share = self.share(received_ms)
        update.away_s = None
        if faces is False and self.away_since_ms is not None:
            update.away_s = round(max(0.0, received_ms - self.away_since_ms) / 1000, 1)
