"""The consent notice a student reads before the camera starts; versioned so a join records which."""

from __future__ import annotations

# Bump the version whenever the text changes in substance: each student row stores the version it
# accepted, and a join that names an older version is refused so the student reads the new text.
CONSENT_VERSION = "2025-02-1"

CONSENT_TEXT = """\
What happens when you join
- Your browser sends small still images from your webcam (about two per second, 320×240) to
  this school's ClassPulse server while the camera is on.
- The server looks for a face in each image and estimates one of seven expressions (angry,
  disgust, fear, happy, sad, surprise, neutral). It does not recognise who you are: you are
  identified only by the display name you type here.
- Images are analysed in memory and then discarded. They are never written to disk, never
  stored in the database and never shown to anyone. Only numbers (which expression, how
  confident, whether a face was seen) are kept, grouped in short time periods.

Who sees what
- Your teacher sees your display name, whether your camera is on, and your current estimated
  expression with its confidence, live during the class, plus a timeline of these numbers.
- Administrators of this school's ClassPulse can export session reports.
- You see on your own page exactly what your teacher currently sees about you.

Your choices
- Joining is voluntary. You can turn the camera off at any time, and you can withdraw at any
  time: analysis stops at once and your withdrawal is recorded.
- Estimates of expressions are often wrong, and an expression is not a feeling. They must not
  be used to grade or judge you.

Legal note
Under the EU Artificial Intelligence Act (Regulation (EU) 2024/1689, Article 5(1)(f), applicable
since 2 February 2025), systems that infer the emotions of people in education institutions are
prohibited in the EU, except where they are intended for medical or safety reasons. In the EU
this service may therefore only run with emotion inference switched off or for such a reason.
"""
