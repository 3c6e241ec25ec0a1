"""Alert rules per session: the defaults, merging with a session's stored overrides, validation.

Shared by the gateway (``GET/PUT /api/sessions/{id}/alert-rules``) and the aggregator's rule
engine (``aggregator/alerts.py``), which is why it lives here and not in either of them.
"""

from __future__ import annotations

import copy
from typing import Any

# Each rule: its parameters with defaults and (min, max) bounds. Times are seconds.
DEFAULT_RULES: dict[str, dict[str, Any]] = {
    # Share of the students with a face whose smoothed expression is negative (angry, disgust,
    # fear, sad), above `threshold` for `sustain_s`; only with at least min_group_size present.
    "negative_share": {"enabled": True, "threshold": 0.4, "sustain_s": 120},
    # A connected student with the camera on but no face in view for `sustain_s`.
    "no_face": {"enabled": True, "sustain_s": 180},
    # A connected student whose camera stream stopped: no frame analysed for `stall_s`.
    "stalled": {"enabled": True, "stall_s": 30},
}
BOUNDS: dict[str, tuple[float, float]] = {
    "threshold": (0.05, 1.0),
    "sustain_s": (0, 3600),
    "stall_s": (5, 3600),
}


def merged(stored: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The defaults with a session's stored overrides on top (unknown keys ignored)."""
    rules = copy.deepcopy(DEFAULT_RULES)
    for name, params in (stored or {}).items():
        if name in rules and isinstance(params, dict):
            rules[name].update({k: v for k, v in params.items() if k in rules[name]})
    return rules


def validate(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Check a (partial) rules document; return it normalised. Raises ValueError."""
    if not isinstance(body, dict):
        raise ValueError("alert rules must be an object of rule -> parameters")
    out: dict[str, dict[str, Any]] = {}
    for name, params in body.items():
        if name not in DEFAULT_RULES:
            raise ValueError(f"unknown rule {name!r}; rules: {', '.join(DEFAULT_RULES)}")
        if not isinstance(params, dict):
            raise ValueError(f"{name}: parameters must be an object")
        clean: dict[str, Any] = {}
        for key, value in params.items():
            if key not in DEFAULT_RULES[name]:
                raise ValueError(f"{name}: unknown parameter {key!r}")
            if key == "enabled":
                if not isinstance(value, bool):
                    raise ValueError(f"{name}.enabled must be true or false")
                clean[key] = value
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name}.{key} must be a number")
            lo, hi = BOUNDS[key]
            if not lo <= value <= hi:
                raise ValueError(f"{name}.{key} must be between {lo:g} and {hi:g}")
            clean[key] = value
        out[name] = clean
    return out


def minutes(seconds: float) -> str:
    """'2 min', '45 s': durations in alert messages."""
    return f"{round(seconds / 60)} min" if seconds >= 90 else f"{round(seconds)} s"
