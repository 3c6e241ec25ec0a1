"""Mean probabilities and the dominant label of stored time buckets: one reading of
``prob_sums`` for reports, history, the class mix and the student's own view.

A bucket stores, per label, the sum of the probabilities of its classified frames (each adds 1
in all), and ``frames_with_face``. Two means follow from that:
- per faced frame (``mean_probs``): what reports and history show;
- per classified frame (``shares``): normalised by the sums' total, so frames seen while
  emotion inference was off do not dilute it (the class mix, the student's own view).

It also stores ``attention_frames`` (faced frames whose head orientation was observed) and
``facing_frames`` (of those, facing the screen): ``facing_share`` is their ratio.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

DIGITS = 4  # probabilities are rounded to this many decimals in reports and exports


def summed(prob_sums: Iterable[Mapping[str, float] | None]) -> dict[str, float]:
    """Several buckets' ``prob_sums`` added up, label by label."""
    out: dict[str, float] = {}
    for sums in prob_sums:
        for k, v in (sums or {}).items():
            out[k] = out.get(k, 0.0) + v
    return out


def mean_probs(
    sums: Mapping[str, float], faced: int, labels: list[str], digits: int | None = DIGITS
) -> dict[str, float] | None:
    """Mean probability per faced frame for each of ``labels``; None without a faced frame or
    without probabilities (stored while emotions were withheld); rounded unless digits is None."""
    if faced <= 0 or not sums:
        return None
    means = {k: sums.get(k, 0.0) / faced for k in labels}
    return means if digits is None else {k: round(v, digits) for k, v in means.items()}


def shares(
    sums: Mapping[str, float], labels: list[str] | None = None, digits: int | None = None
) -> dict[str, float] | None:
    """Mean probability per classified frame for each of ``labels`` (default: the sums' own);
    None when nothing was classified."""
    total = sum(sums.values())
    if total <= 0:
        return None
    means = {k: sums.get(k, 0.0) / total for k in (labels or list(sums))}
    return means if digits is None else {k: round(v, digits) for k, v in means.items()}


def dominant(probs: Mapping[str, float] | None) -> str | None:
    """The label with the highest mean (the first of equals); None without means."""
    return max(probs, key=probs.__getitem__) if probs else None


def facing_share(attention_frames: int | None, facing_frames: int | None) -> float | None:
    """Share of observed frames facing the screen; None without an observed frame."""
    if not attention_frames:
        return None
    return round((facing_frames or 0) / attention_frames, DIGITS)


def total_facing_share(rows: Iterable[Any]) -> float | None:
    """``facing_share`` over several buckets or rows (their attention_frames, facing_frames)."""
    observed = facing = 0
    for r in rows:
        observed += r.attention_frames or 0
        facing += r.facing_frames or 0
    return facing_share(observed, facing)
