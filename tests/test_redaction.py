"""``quality`` is part of the per-student estimate: withheld outside per_student."""

from __future__ import annotations

from classpulse import contracts as c
from classpulse.policy import Policy


# --- 5. quality is part of the per-student estimate ----------------------------------------------
def test_quality_is_redacted_outside_per_student():
    from app.policy_views import redact_update
    from worker.policy_reader import redact

    for mode in ("aggregate_only", "off"):
        update = c.LiveUpdate(
            type="student",
            session_id="s",
            student_id="u",
            t=0.0,
            emotion="uncertain",
            confidence=0.3,
            probs={"happy": 0.3},
            quality="face_too_small",
            faces=1,
        )
        out = redact(update, mode)
        assert (out.emotion, out.confidence, out.probs, out.quality) == (None, None, None, None)
        shown = redact_update(
            {"emotion": "uncertain", "quality": "few_frames", "faces": 1}, Policy(mode)
        )  # type: ignore[arg-type]
        assert shown is not None and shown["quality"] is None and shown["faces"] == 1
    kept = redact(
        c.LiveUpdate(type="student", session_id="s", student_id="u", t=0.0, quality="few_frames"),
        "per_student",
    )
    assert kept.quality == "few_frames"
