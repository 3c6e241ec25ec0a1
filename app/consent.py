"""The consent notice a student reads before the camera starts; versioned so a join records which."""

from __future__ import annotations

# Bump the version whenever the text changes in substance: each student row stores the version it
# accepted, and a join that names an older version is refused so the student reads the new text.
CONSENT_VERSION = "2026-11-1"

# One text for every policy mode: the join page shows, next to it, which mode this school has set.
CONSENT_TEXT = """\
What happens when you join
- Your browser sends small still images from your webcam (about two per second, 320×240) to
  this school's ClassPulse server while the camera is on.
- The server looks for a face in each image to tell whether you are present. Depending on the
  school's setting (shown on this page), it may also estimate one of seven expressions (angry,
  disgust, fear, happy, sad, surprise, neutral). It does not recognise who you are: you are
  identified only by the display name you type here.
- Images are analysed in memory and then discarded. They are never written to disk, never
  stored in the database and never shown to anyone. Only numbers (whether a face was seen and,
  where the setting allows, which expression and how confident) are kept, grouped in short time
  periods, and deleted automatically after the school's retention period.

Who sees what, by the school's setting
- "Per student": your teacher sees your display name, whether your camera is on, and your
  current estimated expression with its confidence, live during the class, plus a timeline.
- "Class only": your teacher sees whether you are present; expressions are counted only for the
  whole class, and only when enough students are present. No expression is kept for you.
- "Off": no expression is estimated at all; your teacher sees only whether you are present.
- Administrators of this school's ClassPulse can export session reports; every view of
  per-student data and every export is recorded in an audit log.
- You see on your own page exactly what your teacher currently sees about you.

Your choices
- Joining is voluntary. You can decline and still attend without any analysis, turn the camera
  off at any time, and withdraw at any time: analysis stops at once and your withdrawal is
  recorded.
- Estimates of expressions are often wrong, and an expression is not a feeling. They must not
  be used to grade or judge you.

Legal note
Under the EU Artificial Intelligence Act (Regulation (EU) 2024/1689, Article 5(1)(f), applicable
since 2 February 2025), systems that infer the emotions of people in education institutions are
prohibited in the EU, except where they are intended for medical or safety reasons. In the EU
this service may therefore only run with emotion inference switched off or for such a reason.
"""
